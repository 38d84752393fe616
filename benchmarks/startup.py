"""Cold start: importing ``function_app.py``, and the first answer after start.

Each figure is taken in a fresh interpreter (the best of several runs; the machine
is shared):

* ``import function_app`` — timed inside the process, and itemized with
  ``python -X importtime`` (the modules costing most, cumulatively). Nothing heavy may
  load here: LightFM, scikit-learn, matplotlib and the Azure ML client belong to the
  retrain path only (checked in ``sys.modules``);
* the first answer as the Functions worker gives it: import ``function_app``, then
  one ``GET /recommendations/{id}`` through ``app.middleware.handle_async`` (the
  ASGI bridge the host calls) over a 10,000-employee local-folder store — loading
  the current version included;
* the same through uvicorn: process start to the first 200 over loopback.

Targets: import ≤ 1.5 s; first answer ≤ 3 s.

    python -m benchmarks startup            # 10,000 employees
    python -m benchmarks startup --small    # 2,000 employees
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import CACHE, REPO, Table, header, log

FULL = {"users": 10_000, "trainings": 500, "interactions": 100_000, "runs": 5}
SMALL = {"users": 2_000, "trainings": 300, "interactions": 20_000, "runs": 3}
# Not azure.identity: the blob trigger's SDK-type binding (function_app.py imports its
# extension, as it must) imports it, 0.04 s on top of the storage SDK serving loads anyway.
HEAVY = ("lightfm", "sklearn", "matplotlib", "azure.ai.ml", "shared.card")

_FIRST_ANSWER = """
import time
started = time.perf_counter()
import asyncio, json, sys
import function_app
imported = time.perf_counter()
import azure.functions as func
request = func.HttpRequest(
    "GET", "http://localhost/recommendations/" + sys.argv[1], headers={}, params={},
    route_params={}, body=b"",
)
response = asyncio.run(function_app.app.middleware.handle_async(request))
answered = time.perf_counter()
heavy = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in %r))
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"import": imported - started, "first": answered - started,
                  "status": response.status_code, "heavy": heavy, "peak": peak}))
"""


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[str, str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout, done.stderr, elapsed


def import_profile(top: int = 12) -> tuple[float, list[str]]:
    """``python -X importtime -c 'import function_app'``: total and the costliest modules."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import function_app"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.split(":", 1)[1].split("|")
        rows.append((int(cumulative_us), int(self_us), name.rstrip()))
    total = next((c for c, _, n in rows if n.strip() == "function_app"), 0) / 1e6
    # The modules function_app and shared.api import directly (two levels of nesting),
    # costliest first: what the import time is made of.
    base = min((len(n) - len(n.lstrip()) for _, _, n in rows), default=0)
    shallow = [(c, s, n) for c, s, n in rows if (len(n) - len(n.lstrip()) - base) // 2 in (1, 2)]
    ranked = sorted(shallow, reverse=True)[:top]
    lines = [f"  {c / 1e6:6.3f} s cumulative  {n.strip()}" for c, _, n in ranked]
    return total, lines


def run(sizes: dict[str, int], *, root: Path = CACHE) -> Table:
    from benchmarks.http import SERVE_CONFIG, ensure_store, start_server
    from benchmarks.load import Request
    from benchmarks.load import run as load

    header(
        "startup",
        f"function_app import and first answer; store of {sizes['users']:,} employees, "
        f"{sizes['trainings']:,} trainings",
    )
    store = ensure_store(sizes["users"], sizes["trainings"], sizes["interactions"], root=root)
    from shared.layout import read_pointer
    from shared.registry import load_recommendations
    from shared.storage import LocalFolderStore

    local = LocalFolderStore(store)
    pointer, _ = read_pointer(local, "recommendations/current.json")
    employee = str(load_recommendations(local, str(pointer["version"])).user_ids[0])
    config = store.parent / "http-serving.toml"
    config.write_text(SERVE_CONFIG, encoding="utf-8")
    env = {"TR_LOCAL_STORE": str(store), "TR_CONFIG": str(config)}

    runs = sizes["runs"]
    log(f"import and first answer, {runs} fresh processes")
    imports: list[float] = []
    firsts: list[float] = []
    processes: list[float] = []
    heavy: set[str] = set()
    peaks: list[int] = []
    code = _FIRST_ANSWER % (HEAVY,)
    for _ in range(runs):
        out, _, elapsed = _python(code, employee, env=env)
        figures = json.loads(out.strip().splitlines()[-1])
        if figures["status"] != 200:
            raise RuntimeError(f"first answer: HTTP {figures['status']}")
        imports.append(figures["import"])
        firsts.append(figures["first"])
        processes.append(elapsed)
        heavy |= set(figures["heavy"])
        peaks.append(int(figures["peak"]))
    log(f"uvicorn: process start to the first 200, {runs} times")
    uvicorn_firsts: list[float] = []
    for _ in range(runs):
        server = start_server(store, config)
        try:
            report = load(server.url, [Request.get(f"/recommendations/{employee}")], 1, timeout=60)
            if report.failures():
                raise RuntimeError(f"uvicorn first answer: {report.status_counts()}")
            uvicorn_firsts.append(time.perf_counter() - server.started)
        finally:
            server.stop()
    importtime_total, import_lines = import_profile()

    table = Table(
        f"cold start: import function_app, first answer over {sizes['users']:,} employees"
    )
    table.add(
        "import function_app (in process)",
        min(imports),
        f"best of {runs}; worst {max(imports):.3f} s",
    )
    table.add(
        "  the same, python -X importtime total",
        importtime_total,
        "importtime's own overhead included",
    )
    table.add(
        "import + first GET through the Functions ASGI bridge",
        min(firsts),
        f"best of {runs}; worst {max(firsts):.3f} s; the version is loaded on this request; "
        "peak MiB: the process's peak RSS",
        peak_bytes=max(peaks),
    )
    table.add(
        "  the same, interpreter start to exit",
        min(processes),
        "python start-up and shutdown included",
    )
    table.add(
        "uvicorn: process start to the first 200",
        min(uvicorn_firsts),
        f"best of {runs}; worst {max(uvicorn_firsts):.3f} s",
    )
    table.target("import <= 1.5 s", min(imports) <= 1.5, f"{min(imports):.2f} s")
    table.target(
        "nothing heavy imported at module level",
        not heavy,
        ", ".join(sorted(heavy)) or f"none of {', '.join(HEAVY)}",
    )
    table.target(
        "first answer <= 3 s",
        min(firsts) <= 3 and min(uvicorn_firsts) <= 3,
        f"{min(firsts):.2f} s through the ASGI bridge, {min(uvicorn_firsts):.2f} s with uvicorn",
    )
    table.notes.append("costliest imports (python -X importtime, cumulative):")
    table.notes += import_lines
    table.result = {"imports": imports, "firsts": firsts, "heavy": heavy}
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cold start")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--runs", type=int)
    args = parser.parse_args(argv)
    sizes = dict(SMALL if args.small else FULL)
    if args.runs:
        sizes["runs"] = args.runs
    table = run(sizes)
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
