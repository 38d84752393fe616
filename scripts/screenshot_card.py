"""Screenshot a model card (or any local HTML page) with headless Chromium.

Usage: ``python scripts/screenshot_card.py CARD_HTML OUT_PNG [--timeout SECONDS]``

Chromium runs sandboxed from the network as far as its flags allow (no background
networking, updates, sync or QUIC) with a throw-away profile, and is killed when
it overruns the timeout.
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


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: Path, out: Path, timeout: float = 60.0, window: str = WINDOW) -> None:
    """Render ``page`` into ``out`` (PNG); raises RuntimeError with a readable message."""
    binary = find_chromium()
    if binary is None:
        raise RuntimeError("Chromium not found: install it with `apt-get install chromium`")
    if not page.is_file():
        raise RuntimeError(f"{page}: no such file")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="card-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={window}",
            f"--screenshot={out.resolve()}",
            page.resolve().as_uri(),
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
                _, stderr = chromium.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(chromium.pid, signal.SIGKILL)
                chromium.communicate()
                raise RuntimeError(f"Chromium did not finish within {timeout:g} s") from None
    if chromium.returncode != 0 or not out.is_file():
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"Chromium failed (exit {chromium.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card_html", type=Path)
    parser.add_argument("out_png", type=Path)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--window", default=WINDOW, help=f"WIDTH,HEIGHT (default {WINDOW})")
    args = parser.parse_args(argv)
    try:
        screenshot(args.card_html, args.out_png, args.timeout, args.window)
    except RuntimeError as exc:
        print(f"screenshot_card: {exc}", file=sys.stderr)
        return 1
    print(args.out_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
