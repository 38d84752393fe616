"""Peak memory of accepting a trainings-taken drop through the blob trigger, on Azurite.

The drop (``benchmarks parse``'s file of ``rows`` rows) is uploaded to ``hr-extracts/``
on an Azurite started here, beside users and trainings extracts naming its ids. Then,
in a fresh interpreter each, peak resident memory (VmHWM over the RSS before the call):

- **streamed**: the function body ``extract_dropped`` called with the ``BlobClient`` the
  trigger binds, as the worker makes it: the drop is read a chunk at a time;
- **held whole** (the baseline, the way the ``InputStream`` binding delivered it before):
  the blob downloaded whole into memory, then accepted from those bytes.

- **before**, with ``--before REF`` (``c076bb0``, the last commit before the trigger bound a
  ``BlobClient``): that commit's function body, run from a git worktree, given the
  blob's bytes whole as its ``InputStream`` binding delivered them.

Target, for drops of a million rows and more: streamed at most 4x the file, and below
the held-whole peak. Smaller drops are dominated by what does not grow with them (about
45 MiB: the current users and trainings extracts a drop is checked against, the code).

    python -m benchmarks drop            # 1 M and 10 M rows
    python -m benchmarks drop --small    # 100,000 and 1 M rows
    python -m benchmarks drop --before c076bb0   # and the code of that commit
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import REPO, Table, header, log
from benchmarks.parse import FULL, SMALL, taken_csv

TARGET = 4.0  # peak over the file size
TARGET_ROWS = 1_000_000  # the targets hold from this size
AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account: public, documented, not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_MEASURE = """
import io, json, os, sys, time
sys.path.insert(0, "tests")
mode, name = sys.argv[1], sys.argv[2]
from world import bound_blob
import function_app
from shared import runtime
from shared.pipeline import accept_extract

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

class HeldWhole:  # the drop's bytes, handed over whole
    def __init__(self, client):
        self.etag = client.get_blob_properties().etag
        self.data = client.download_blob().readall()
        self.path, self.size = f"hr-extracts/{name}", len(self.data)
    def open(self):
        return io.BytesIO(self.data)

client = bound_blob("hr-extracts", name)
runtime.app_store(), runtime.app_config()
before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
started = time.perf_counter()
if mode == "streamed":
    function_app.extract_dropped(client)
else:
    accept_extract(runtime.app_store(), name, runtime.app_config(), blob=HeldWhole(client))
seconds = time.perf_counter() - started
print(json.dumps({"peak": status("VmHWM:") - before, "seconds": seconds}))
"""


# The function body before issue 17: on_extract_dropped(name, bytes).
_MEASURE_BEFORE = """
import json, os, sys, time
name = sys.argv[2]
from azure.storage.blob import BlobClient
import function_app
from shared import runtime

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

client = BlobClient.from_connection_string(os.environ["DataStorage"], "hr-extracts", name)
runtime.app_store(), runtime.app_config()
before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
started = time.perf_counter()
data = client.download_blob().readall()  # what the host handed over: the blob whole
runtime.on_extract_dropped("hr-extracts/" + name, data)
seconds = time.perf_counter() - started
print(json.dumps({"peak": status("VmHWM:") - before, "seconds": seconds}))
"""


@contextmanager
def worktree(ref: str | None) -> Iterator[Path | None]:
    """A git worktree of ``ref`` (removed afterwards), or None without a ref."""
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), ref],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            yield folder
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(folder)],
                cwd=REPO,
                check=False,
                capture_output=True,
            )


@contextmanager
def azurite(folder: Path) -> Iterator[str]:
    """A connection string to an Azurite blob service started for the run (on disk)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(AZURITE), "--skipApiVersionCheck", "--loose", "--silent", "--location"]
    command += [str(folder), "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"Azurite ({AZURITE}) did not start") from None
                time.sleep(0.1)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # busy writing hundreds of MB away
            proc.kill()
            proc.wait()


def entities(folder: Path) -> dict[str, Path]:
    """Users and trainings extracts with the ids of ``benchmarks parse``'s files."""
    users, trainings = folder / "users.csv", folder / "trainings.csv"
    users.write_text(
        "User-Id,ou,skills,language,grade,career interests\n"
        + "".join(
            f"{i:06d},ou{i % 20},s{i % 50},english,G{i % 5},c{i % 9}\n" for i in range(1, 100_001)
        )
    )
    trainings.write_text(
        "Training-Id,Training Title,main skill,category,provider,language,level\n"
        + "".join(
            f"T{i:05d},Training {i},s{i % 50},c{i % 9},p{i % 4},english,l{i % 3}\n"
            for i in range(1, 5_001)
        )
    )
    return {"users": users, "trainings": trainings}


def run(sizes: Sequence[int], before: str | None = None) -> Table:
    from shared.storage import AzureBlobStore

    table = Table(
        "accept a trainings-taken drop through the blob trigger: peak memory over the file"
    )
    worst = 0.0
    below_whole = True
    with tempfile.TemporaryDirectory() as tmp, worktree(before) as old:
        folder = Path(tmp)
        config = folder / "config.toml"
        config.write_text("[contract.limits]\nmax_bytes = 4_000_000_000\nmax_rows = 100_000_000\n")
        with azurite(folder / "azurite") as conn:
            store = AzureBlobStore.from_connection_string(conn)
            for kind, path in entities(folder).items():
                with path.open("rb") as f:
                    store.write(f"hr-extracts/{kind}/{kind}.csv", f)
            env = {**os.environ, "DataStorage": conn, "TR_CONFIG": str(config)}
            env.pop("TR_LOCAL_STORE", None)
            for kind in ("users", "trainings"):  # the current extracts a drop is checked against
                measure(env, f"{kind}/{kind}.csv", "streamed")
            for rows in sizes:
                path = taken_csv(rows)
                name = f"trainings-taken/taken-{rows}.csv"
                log(f"{rows:,} rows: uploading {path.stat().st_size / 2**20:,.0f} MiB to Azurite")
                with path.open("rb") as f:
                    store.write(f"hr-extracts/{name}", f)
                size = path.stat().st_size
                peaks = {}
                modes = ["held whole", "streamed", *([f"before ({before})"] if old else [])]
                for mode in modes:
                    log(f"{rows:,} rows: {mode}, in a fresh interpreter")
                    measured = measure(env, name, mode, old if mode.startswith("before") else None)
                    peaks[mode] = measured["peak"]
                    table.add(
                        f"{rows:,} rows ({size / 2**20:,.0f} MiB), {mode}",
                        measured["seconds"],
                        f"{measured['peak'] / size:.1f}x the file",
                        peak_bytes=measured["peak"],
                        ratio=False,
                    )
                if rows >= TARGET_ROWS:
                    worst = max(worst, peaks["streamed"] / size)
                    below_whole &= peaks["streamed"] < peaks["held whole"]
                ratio = peaks["held whole"] / peaks["streamed"]
                log(f"{rows:,} rows: held whole peaks at {ratio:.2f}x the streamed peak")
    table.target(
        f"streamed peak <= {TARGET:g}x the file from {TARGET_ROWS:,} rows",
        worst <= TARGET,
        f"worst {worst:.1f}x",
    )
    table.target(f"streamed peak below held whole from {TARGET_ROWS:,} rows", below_whole)
    return table


def measure(
    env: dict[str, str], name: str, mode: str, code: Path | None = None
) -> dict[str, float]:
    """Peak and seconds of one accept in a fresh interpreter (``code``: an older checkout)."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE if code is None else _MEASURE_BEFORE, mode, name],
        cwd=code or REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"{mode} {name} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks drop")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--before", metavar="REF", help="also measure this commit's trigger")
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else FULL
    header("drop", ", ".join(f"{n:,} rows" for n in sizes))
    table = run(sizes, args.before)
    table.print()
    return 0 if table.all_met else 1
