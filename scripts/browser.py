"""Headless Chromium with the network off: a page's DOM after its scripts ran, or a
screenshot (the model card, the API's /docs).

    python scripts/browser.py screenshot PAGE OUT_PNG [--window W,H] [--timeout S]
    python scripts/browser.py dom PAGE [--timeout S]

PAGE is a file or a URL. Chromium runs with a throw-away profile and nothing but
loopback reachable: every host name resolves to nothing and every other address
goes through a proxy that does not exist, so a page that needs the internet shows
it (what an intranet without internet access sees). It is killed when it overruns
the timeout. Chromium is a Debian package: ``apt-get install chromium``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
WINDOW = "1280,2400"
OFFLINE = (
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",  # nothing listens there: any other address fails
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _url(page: str | Path) -> str:
    text = str(page)
    if text.startswith(("http://", "https://", "file://")):
        return text
    path = Path(page)
    if not path.is_file():
        raise RuntimeError(f"{page}: no such file")
    return path.resolve().as_uri()


def run(page: str | Path, *flags: str, timeout: float = 60.0, window: str = WINDOW) -> str:
    """Chromium's standard output for ``page`` with ``flags`` (e.g. --dump-dom)."""
    binary = find_chromium()
    if binary is None:
        raise RuntimeError("Chromium not found: install it with `apt-get install chromium`")
    url = _url(page)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            *OFFLINE,
            f"--user-data-dir={profile}",
            f"--window-size={window}",
            *flags,
            url,
        ]
        # A session of its own, so that a timeout ends Chromium's helper processes too.
        with subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as chromium:
            try:
                stdout, stderr = chromium.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(chromium.pid, signal.SIGKILL)
                chromium.communicate()
                raise RuntimeError(f"Chromium did not finish within {timeout:g} s") from None
    if chromium.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"Chromium failed (exit {chromium.returncode}):\n{tail}")
    return stdout


def dom(page: str | Path, timeout: float = 60.0, settle_ms: int = 10_000) -> str:
    """The page's DOM once its scripts ran (virtual time: no real waiting when idle)."""
    return run(page, f"--virtual-time-budget={settle_ms}", "--dump-dom", timeout=timeout)


def screenshot(page: str | Path, out: Path, timeout: float = 60.0, window: str = WINDOW) -> None:
    """Render ``page`` into ``out`` (PNG); raises RuntimeError with a readable message."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    run(
        page,
        "--virtual-time-budget=10000",
        f"--screenshot={out.resolve()}",
        timeout=timeout,
        window=window,
    )
    if not out.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot of {page}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shot = commands.add_parser("screenshot", help="render PAGE into OUT_PNG")
    shot.add_argument("page")
    shot.add_argument("out_png", type=Path)
    shot.add_argument("--window", default=WINDOW, help=f"WIDTH,HEIGHT (default {WINDOW})")
    dump = commands.add_parser("dom", help="print PAGE's DOM after its scripts ran")
    dump.add_argument("page")
    for sub in (shot, dump):
        sub.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    try:
        if args.command == "screenshot":
            screenshot(args.page, args.out_png, args.timeout, args.window)
            print(args.out_png)
        else:
            print(dom(args.page, args.timeout))
    except RuntimeError as exc:
        print(f"browser: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
