"""The HTTP API over loopback: uvicorn, one worker, a bounded load.

Two stores are built once and cached under ``var/benchmarks/`` (a retrain of the
synthetic extracts with 2 epochs: the model's quality does not matter here, its
shapes do):

* 100,000 employees x 5,000 trainings, precomputed — for ``GET /recommendations/{id}``;
* 10,000 employees x 20,000 trainings — for ``POST /recommendations`` (a new
  employee scored on the fly against the whole catalog).

For each, a uvicorn server (one worker, access log off) is started in its own
process and loaded from this one with a fixed number of requests that stops by
itself (:mod:`benchmarks.load`, loopback only):

* closed loop: 32 clients, each sending its next request as soon as it has its
  answer — the most the worker can serve, and the latency at that saturation;
* open loop: requests issued at a fixed rate (500/s for GET) over 32 connections;
  latency counts from the moment a request was due, so a server falling behind
  shows up in it (no coordinated omission).

Targets: GET p99 ≤ 10 ms at 32 concurrent clients and ≥ 500 requests/s; POST
p99 ≤ 20 ms. The server's CPU time per request is read from ``/proc``; with
``--profile`` a py-spy profile of the server under the closed-loop load is summarized.

    python -m benchmarks http            # the sizes above
    python -m benchmarks http --small    # 10,000 employees x 1,000 / 2,000 trainings
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, REPO, Table, header, log, rss_peak, rss_reset, synthetic_csvs
from benchmarks.load import Report, Request, Result, run

FULL = {
    "get_users": 100_000,
    "get_trainings": 5_000,
    "get_interactions": 1_000_000,
    "post_users": 10_000,
    "post_trainings": 20_000,
    "post_interactions": 100_000,
    "requests": 6_000,
    "post_requests": 1_500,
    "concurrency": 32,
    "rate": 500,
}
SMALL = {
    **FULL,
    "get_users": 10_000,
    "get_trainings": 1_000,
    "get_interactions": 100_000,
    "post_users": 5_000,
    "post_trainings": 2_000,
    "post_interactions": 50_000,
    "requests": 2_000,
    "post_requests": 500,
}
SERVE_CONFIG = "[serving]\nrefresh_seconds = 3600\n"  # no pointer re-check while measured


# ----------------------------------------------------------------- stores


def ensure_store(
    users: int, trainings: int, interactions: int, *, epochs: int = 2, root: Path = CACHE
) -> Path:
    """A local-folder store with a published model and precomputed recommendations (cached)."""
    folder = root / f"store-{users}-{trainings}-{interactions}"
    if (folder / "recommendations" / "current.json").exists():
        return folder
    from shared.pipeline import drop_extract, retrain
    from shared.settings import Config
    from shared.storage import LocalFolderStore

    paths = synthetic_csvs(users, trainings, interactions, root=root)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    config = Config()
    config = config.model_copy(
        update={
            "model": config.model.model_copy(update={"epochs": epochs, "early_stopping": False}),
            "gate": config.gate.model_copy(update={"enabled": False}),
        }
    )
    store = LocalFolderStore(tmp)
    started = time.perf_counter()
    log(f"building the store {folder.name} (retrain with {epochs} epochs, cached)")
    for kind in ("users", "trainings", "trainings-taken"):
        with paths[kind].open("rb") as f:
            drop_extract(store, f"{kind}/{kind}.csv", f, config)
    result = retrain(store, config)
    if result.status != "published":
        raise RuntimeError(f"could not build {folder}: retrain {result.status}")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    log(f"store built in {time.perf_counter() - started:.0f} s")
    return folder


# ----------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    started: float
    peak: int | None = None  # the server's peak RSS during the last measured run

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux ``/proc``)."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(store: Path, config: Path, timeout: float = 60.0) -> Server:
    """uvicorn with one worker over ``store``, on a free loopback port; waits until it listens."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.http", "serve", str(store), str(config), str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"server exited: {err[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Server(process, f"http://127.0.0.1:{port}", started)
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise RuntimeError("server did not start listening")


def serve(store: str, config: str, port: int) -> None:
    """The server process: the app over a local folder, uvicorn, one worker, no access log."""
    import uvicorn

    from shared.api import create_app
    from shared.settings import load_config
    from shared.storage import LocalFolderStore

    app = create_app(LocalFolderStore(Path(store)), load_config(config))
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, access_log=False, log_level="warning")


# ----------------------------------------------------------------- open-loop load


async def _paced(
    base_url: str, requests: Sequence[Request], rate: float, connections: int, timeout: float
) -> Report:
    """Issue request ``i`` at ``i / rate`` seconds over at most ``connections`` connections.

    A request's latency runs from when it was due, not from when a free connection
    sent it: a server that falls behind makes the client wait, and that counts.
    """
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError("loopback only")
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    results: list[Result | None] = [None] * len(requests)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(requests):
                index = next_index
                next_index += 1
                due = start + index / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                request = requests[index]
                writer.write(request.wire(url.netloc))
                status, body, error = 0, b"", None
                try:
                    status, body = await asyncio.wait_for(_answer(reader), timeout)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                done = loop.time()
                results[index] = Result(
                    index, request, status, body, {}, due - start, done - due, error
                )
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    finished = [r for r in results if r is not None]
    return Report(finished, loop.time() - start, connections)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise ValueError("chunked answers are not expected from this API")
    return status, await reader.readexactly(length)


def paced(
    base_url: str, requests: Sequence[Request], rate: float, connections: int, timeout: float = 10
) -> Report:
    return asyncio.run(_paced(base_url, requests, rate, connections, timeout))


# ----------------------------------------------------------------- profile


def profile_server(server: Server, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` on the server (raw collapsed stacks); None if unavailable."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "--duration",
            str(math.ceil(seconds)),
            "--pid",
            str(server.process.pid),
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _frame(frame: str) -> str:
    """``function (path/to/file.py:123)`` -> ``function (file.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1].rstrip(')')})"


_IDLE = {("wait", "threading.py"), ("get", "queue.py"), ("select", "selectors.py")}


def _idle(frame: str) -> bool:
    name, _, where = frame.partition(" (")
    return (name.rsplit(".", 1)[-1], where.rstrip(")")) in _IDLE


def summarize_profile(raw: Path, top: int = 12) -> list[str]:
    """Where the server's busy samples go: inclusive and self shares of the top functions.

    Samples whose innermost frame is waiting (a worker thread on its queue, the event
    loop in ``select``) are idle and left out.
    """
    if not raw.exists():
        return ["(no profile: py-spy could not attach)"]
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    busy = idle = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        frames = [_frame(frame) for frame in stack.split(";")]
        if _idle(frames[-1]):
            idle += int(count)
            continue
        busy += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    if not busy:
        return ["(no busy sample)"]
    lines = [f"py-spy: {busy:,} busy samples of the server ({idle:,} idle left out)"]
    ranked = [(f, n) for f, n in inclusive.items() if n < 0.97 * busy]  # not the roots
    ranked.sort(key=lambda item: -item[1])
    lines += [f"  {n / busy:6.1%} incl.  {frame}" for frame, n in ranked[:top]]
    lines += [
        f"  {n / busy:6.1%} self   {frame}"
        for frame, n in sorted(own.items(), key=lambda item: -item[1])[: top // 2]
    ]
    return lines


# ----------------------------------------------------------------- the benchmark


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def latency_note(report: Report) -> str:
    return (
        f"p50 {_ms(report.percentile(50))} / p90 {_ms(report.percentile(90))} / "
        f"p99 {_ms(report.percentile(99))} / max {_ms(report.latencies[-1])} ms; "
        f"{report.requests_per_second:,.0f} req/s"
    )


def get_requests(store: Path, n: int, seed: int = 1) -> list[Request]:
    from shared.layout import read_pointer
    from shared.registry import load_recommendations
    from shared.storage import LocalFolderStore

    local = LocalFolderStore(store)
    pointer, _ = read_pointer(local, "recommendations/current.json")
    ids = load_recommendations(local, str(pointer["version"])).user_ids
    rng = np.random.default_rng(seed)
    return [Request.get(f"/recommendations/{ids[i]}") for i in rng.integers(0, len(ids), n)]


def post_requests(n: int, seed: int = 2) -> list[Request]:
    from shared import synthetic

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        skills = list(rng.choice(synthetic.SKILLS, size=int(rng.integers(2, 6)), replace=False))
        interests = list(
            rng.choice(synthetic.CATEGORIES, size=int(rng.integers(1, 3)), replace=False)
        )
        body = {
            "attributes": {
                "ou": str(rng.choice(synthetic.DEPARTMENTS)),
                "skills": [str(s) for s in skills],
                "language": str(rng.choice(synthetic.LANGUAGES)),
                "grade": str(rng.choice(synthetic.GRADES)),
                "career interests": [str(c) for c in interests],
            },
            "n": 10,
        }
        out.append(Request.post_json("/recommendations", body))
    return out


def check(report: Report, what: str) -> None:
    failures = report.failures()
    if failures or report.not_sent:
        first = failures[0] if failures else None
        raise RuntimeError(
            f"{what}: {len(failures)} failed, {report.not_sent} not sent; first: "
            f"{first.status if first else ''} {first.error if first else ''} "
            f"{first.body[:200] if first else b''!r}"
        )


def measure_endpoint(
    server: Server,
    requests: list[Request],
    concurrency: int,
    *,
    rate: float | None = None,
    profile: Path | None = None,
) -> tuple[Report, float, list[str]]:
    """One bounded run; returns the report, the server's CPU ms per request, profile lines.

    The server's peak RSS during the run is left in ``server.peak``.
    """
    rss_reset(server.process.pid)
    cpu_before = server.cpu_seconds()
    spy = None
    if profile is not None:
        spy = profile_server(server, 3600, profile)
        time.sleep(0.5)
    if rate is None:
        report = run(server.url, requests, concurrency, timeout=30, max_seconds=600)
    else:
        report = paced(server.url, requests, rate, concurrency, timeout=30)
    cpu = server.cpu_seconds() - cpu_before
    server.peak = rss_peak(server.process.pid)
    lines: list[str] = []
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
        lines = summarize_profile(profile) if profile else []
    check(report, requests[0].path)
    return report, cpu * 1000 / max(len(report.results), 1), lines


def run_http(sizes: dict[str, int], *, profile: bool = False, root: Path = CACHE) -> Table:
    header(
        "http",
        f"GET over {sizes['get_users']:,} employees x {sizes['get_trainings']:,} trainings; "
        f"POST over {sizes['post_trainings']:,} trainings; uvicorn, one worker, loopback",
    )
    get_store = ensure_store(
        sizes["get_users"], sizes["get_trainings"], sizes["get_interactions"], root=root
    )
    post_store = ensure_store(
        sizes["post_users"], sizes["post_trainings"], sizes["post_interactions"], root=root
    )
    config = root / "http-serving.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(SERVE_CONFIG, encoding="utf-8")
    c, n, rate = sizes["concurrency"], sizes["requests"], sizes["rate"]
    table = Table(
        f"HTTP over loopback, uvicorn, one worker: GET /recommendations/{{id}} "
        f"({sizes['get_users']:,} employees precomputed), POST /recommendations "
        f"({sizes['post_trainings']:,} trainings)"
    )
    profiles: list[str] = []

    log("GET: starting the server")
    server = start_server(get_store, config)
    try:
        warm_up = min(1000, n)
        requests = get_requests(get_store, n + warm_up)
        warm, first_answer = requests[:warm_up], requests[warm_up:]
        run(server.url, warm[:1], 1, timeout=60)  # the first answer loads the version
        run(server.url, warm, c, timeout=30)
        log(f"GET: closed loop, {c} clients, {n:,} requests")
        closed, cpu_closed, lines = measure_endpoint(
            server, first_answer, c, profile=root / "get-profile.txt" if profile else None
        )
        profiles += ["GET closed loop: " + line for line in lines]
        table.add(
            f"GET closed loop: {c} clients back to back",
            closed.elapsed,
            f"{len(closed.results):,} requests; {latency_note(closed)}; server CPU "
            f"{cpu_closed:.2f} ms/request",
            peak_bytes=server.peak,
        )
        log(f"GET: open loop, {rate} requests/s over {c} connections")
        opened, cpu_open, _ = measure_endpoint(server, first_answer, c, rate=rate)
        table.add(
            f"GET open loop: {rate}/s offered over {c} connections",
            opened.elapsed,
            f"{len(opened.results):,} requests; {latency_note(opened)}; server CPU "
            f"{cpu_open:.2f} ms/request",
            peak_bytes=server.peak,
        )
        log("GET: one client")
        single, _, _ = measure_endpoint(server, first_answer[:1000], 1)
        table.add(
            "GET closed loop: 1 client",
            single.elapsed,
            f"{len(single.results):,} requests; {latency_note(single)}",
            peak_bytes=server.peak,
        )
    finally:
        server.stop()

    log("POST: starting the server")
    server = start_server(post_store, config)
    try:
        warm_up = min(200, sizes["post_requests"])
        bodies = post_requests(sizes["post_requests"] + warm_up)
        run(server.url, bodies[:1], 1, timeout=60)
        run(server.url, bodies[:warm_up], 4, timeout=30)
        measured = bodies[warm_up:]
        log("POST: one client")
        post_single, cpu_post, lines = measure_endpoint(
            server, measured, 1, profile=root / "post-profile.txt" if profile else None
        )
        profiles += ["POST one client: " + line for line in lines]
        table.add(
            "POST closed loop: 1 client",
            post_single.elapsed,
            f"{len(post_single.results):,} requests; {latency_note(post_single)}; server CPU "
            f"{cpu_post:.2f} ms/request",
            peak_bytes=server.peak,
        )
        log(f"POST: closed loop, {c} clients")
        post_closed, _, _ = measure_endpoint(server, measured, c)
        table.add(
            f"POST closed loop: {c} clients back to back",
            post_closed.elapsed,
            f"{len(post_closed.results):,} requests; {latency_note(post_closed)}",
            peak_bytes=server.peak,
        )
    finally:
        server.stop()

    table.target(
        f"GET p99 <= 10 ms with {c} concurrent clients at >= 500 req/s (open loop, {rate}/s)",
        opened.percentile(99) <= 0.010 and opened.requests_per_second >= 500 * 0.98,
        f"p99 {_ms(opened.percentile(99))} ms at {opened.requests_per_second:,.0f} req/s",
    )
    table.target(
        f"GET >= 500 req/s with {c} clients back to back (closed loop)",
        closed.requests_per_second >= 500,
        f"{closed.requests_per_second:,.0f} req/s, p99 {_ms(closed.percentile(99))} ms",
    )
    table.target(
        f"GET p99 <= 10 ms with {c} clients back to back (closed loop)",
        closed.percentile(99) <= 0.010,
        f"p99 {_ms(closed.percentile(99))} ms; by Little's law {c} clients always in flight "
        f"wait about {c} / throughput = {_ms(c / closed.requests_per_second)} ms",
    )
    table.target(
        "POST p99 <= 20 ms",
        post_single.percentile(99) <= 0.020,
        f"p99 {_ms(post_single.percentile(99))} ms with one client",
    )
    table.notes += [
        "seconds: wall time of the bounded run; latencies from the load generator; "
        "peak MiB: the server process's peak RSS during the run (VmHWM)",
        *profiles,
    ]
    table.result = {
        "closed": closed,
        "open": opened,
        "post": post_single,
    }
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":  # the server process started by this benchmark
        serve(args[1], args[2], int(args[3]))
        return 0
    parser = argparse.ArgumentParser(description="the HTTP API over loopback")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy the server under load")
    for name in FULL:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parsed = parser.parse_args(args)
    sizes = dict(SMALL if parsed.small else FULL)
    for name in FULL:
        value = getattr(parsed, name)
        if value is not None:
            sizes[name] = value
    table = run_http(sizes, profile=parsed.profile)
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
