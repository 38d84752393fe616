"""A bounded HTTP/1.1 load generator for the API over loopback (standard library only).

N requests at concurrency C, each of C workers holding one keep-alive connection and
sending its next request as soon as the previous answer is read (a closed loop, like
the intranet apps' server-side calls). Every request is recorded — status, body,
latency — so tests can check each answer, and benchmarks get p50/p90/p99 and req/s.

Bounded by design: the request count is fixed up front, a run stops issuing requests
after ``max_seconds``, each request times out after ``timeout`` seconds, and only
loopback addresses are accepted as targets.

asyncio with raw sockets rather than threads + ``http.client``: one thread parsing
answers is far cheaper than C threads fighting for the GIL, which matters when the
server under test shares the machine's two cores with the generator.

As a library::

    from benchmarks.load import Request, run
    report = run("http://127.0.0.1:8000", [Request("GET", "/health")] * 1000, concurrency=16)
    print(report.summary())
    assert not report.failures()

From the command line::

    python benchmarks/load.py http://127.0.0.1:8000 /recommendations/000001 -n 2000 -c 16
    python benchmarks/load.py http://127.0.0.1:8000 /recommendations --post body.json -n 500
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
TRANSPORT_ERROR = 0  # the status of a request that got no HTTP answer


@dataclass(frozen=True)
class Request:
    """One request to send: method, path (with query) and an optional body."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    tag: str = ""  # free label carried to the result (e.g. which employee)

    @classmethod
    def get(cls, path: str, tag: str = "") -> Request:
        return cls("GET", path, tag=tag)

    @classmethod
    def post_json(cls, path: str, payload: Any, tag: str = "") -> Request:
        body = json.dumps(payload).encode()
        return cls("POST", path, body, (("Content-Type", "application/json"),), tag)

    def wire(self, host_header: str) -> bytes:
        """The request as sent: HTTP/1.1, keep-alive (the default), explicit length."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host_header}"]
        lines += ["User-Agent: benchmarks-load/1", "Accept: application/json"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body or self.method in {"POST", "PUT", "PATCH"}:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class Result:
    """The outcome of one request."""

    index: int  # position in the request list
    request: Request
    status: int  # HTTP status; TRANSPORT_ERROR (0) when no answer came
    body: bytes
    headers: dict[str, str]  # lower-cased names
    started: float  # seconds since the run started
    latency: float  # seconds, from the first byte written to the last byte read
    error: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Report:
    """Every result of a run, in request order, and the run's wall time."""

    results: list[Result]
    elapsed: float
    concurrency: int
    not_sent: int = 0  # requests left when max_seconds ran out
    latencies: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.latencies = sorted(r.latency for r in self.results)

    @property
    def served(self) -> int:
        """Requests that got an HTTP answer (any status)."""
        return sum(1 for r in self.results if r.status != TRANSPORT_ERROR)

    @property
    def requests_per_second(self) -> float:
        return len(self.results) / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in seconds (nearest rank: p99 of 1,000 is the 990th)."""
        if not self.latencies:
            return math.nan
        rank = max(1, math.ceil(p / 100 * len(self.latencies)))
        return self.latencies[rank - 1]

    def failures(self, ok: Iterable[int] = (200,)) -> list[Result]:
        """Results whose status is not in ``ok`` (transport errors included)."""
        accepted = set(ok)
        return [r for r in self.results if r.status not in accepted]

    def status_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return dict(sorted(counts.items()))

    def stats(self) -> dict[str, Any]:
        """The run in numbers (latencies in ms), e.g. for a benchmark's JSON line."""
        ms = 1000.0
        return {
            "requests": len(self.results),
            "served": self.served,
            "failures": len(self.failures()),
            "not_sent": self.not_sent,
            "concurrency": self.concurrency,
            "elapsed_s": round(self.elapsed, 3),
            "requests_per_second": round(self.requests_per_second, 1),
            **{
                f"p{p}_ms": round(self.percentile(p) * ms, 2) if self.latencies else None
                for p in (50, 90, 99)
            },
            "max_ms": round(self.latencies[-1] * ms, 2) if self.latencies else None,
            "statuses": self.status_counts(),
        }

    def summary(self) -> str:
        ms = 1000.0
        return (
            f"{len(self.results)} requests, concurrency {self.concurrency}, "
            f"{self.elapsed:.2f} s, {self.requests_per_second:.0f} req/s; latency "
            f"p50 {self.percentile(50) * ms:.1f} ms, p90 {self.percentile(90) * ms:.1f} ms, "
            f"p99 {self.percentile(99) * ms:.1f} ms, max {self.latencies[-1] * ms:.1f} ms; "
            f"statuses {self.status_counts()}"
            + (f"; {self.not_sent} not sent (time limit)" if self.not_sent else "")
            if self.results
            else "no request completed"
        )


class _BadResponse(Exception):
    pass


def _require_loopback(host: str) -> None:
    """Refuse any target that is not this machine: load is only ever sent over loopback."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"{host!r} is not a loopback address: load is for 127.0.0.1 only")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEADER_BYTES:
        raise _BadResponse("response headers too large")
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise _BadResponse(f"bad status line {status_line!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        # Repeated headers (set-cookie, vary) are joined, as RFC 9110 allows for lists.
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected: the final CRLF
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, headers, b"".join(chunks)
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await reader.read()  # delimited by the connection's close


class _Connection:
    """One keep-alive connection, opened on first use and again after a close."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, wire: bytes) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            reused = self.streams is not None and not self.streams[0].at_eof()
            if not reused:
                self.close()
                self.streams = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout
                )
            assert self.streams is not None
            reader, writer = self.streams
            writer.write(wire)
            try:
                status, headers, body = await asyncio.wait_for(_read_response(reader), self.timeout)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                # A kept-alive connection the server closed while idle: send once more
                # on a new one, as HTTP clients do; not when it was fresh, nor after
                # part of an answer came (that is the server's failure to report).
                partial = isinstance(exc, asyncio.IncompleteReadError) and bool(exc.partial)
                if attempt == 2 or not reused or partial:
                    raise
                self.close()
                continue
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, headers, body
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def run_async(
    base_url: str,
    requests: Sequence[Request],
    concurrency: int = 16,
    *,
    timeout: float = 10.0,
    max_seconds: float = 60.0,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Send ``requests`` over ``concurrency`` keep-alive connections; see :func:`run`."""
    url = urlsplit(base_url)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"{base_url!r}: only http://<loopback host>:<port> is supported")
    host, port = url.hostname, url.port or 80
    _require_loopback(host)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    host_header = url.netloc
    wires: dict[Request, bytes] = {}
    results: list[Result | None] = [None] * len(requests)
    next_index = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + max_seconds

    async def worker() -> None:
        nonlocal next_index
        connection = _Connection(host, port, timeout)
        try:
            while next_index < len(requests) and loop.time() < stop_at:
                index = next_index  # one thread runs the loop: no lock between awaits
                next_index += 1
                request = requests[index]
                wire = wires.get(request)
                if wire is None:
                    wire = wires[request] = request.wire(host_header)
                began = loop.time()
                status, body, error = TRANSPORT_ERROR, b"", None
                headers: dict[str, str] = {}
                try:
                    status, headers, body = await connection.exchange(wire)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, _BadResponse) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    connection.close()  # reconnect for the next request
                except ValueError as exc:  # an unparsable status, length or chunk size
                    error = f"bad response: {exc}"
                    connection.close()
                result = Result(
                    index, request, status, body, headers, began - start, loop.time() - began, error
                )
                results[index] = result
                if on_result is not None:
                    on_result(result)
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(requests))))))
    done = [r for r in results if r is not None]
    return Report(done, loop.time() - start, concurrency, len(requests) - len(done))


def run(
    base_url: str,
    requests: Sequence[Request],
    concurrency: int = 16,
    *,
    timeout: float = 10.0,
    max_seconds: float = 60.0,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Send every request once, ``concurrency`` at a time, and return what came back.

    Parameters
    ----------
    base_url
        ``http://127.0.0.1:PORT`` (loopback only; anything else raises ``ValueError``).
    requests
        What to send, in order of issue; repeat an item to send it again.
    concurrency
        Connections kept open, each with one request in flight.
    timeout
        Per request (connect + answer); a request over it is a transport error (status 0).
    max_seconds
        No request is issued after this; the rest are counted in ``Report.not_sent``.
    on_result
        Called in the generator's thread after each answer (keep it quick): e.g. to set
        an event once some requests were served.
    """
    return asyncio.run(
        run_async(
            base_url,
            requests,
            concurrency,
            timeout=timeout,
            max_seconds=max_seconds,
            on_result=on_result,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base_url", help="http://127.0.0.1:PORT (loopback only)")
    parser.add_argument("paths", nargs="+", help="request paths, sent in turn")
    parser.add_argument("-n", "--requests", type=int, default=1000)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--post", type=Path, help="POST this JSON file's content to each path")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=int, default=0, help="requests sent first, not counted")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON line")
    args = parser.parse_args(argv)
    if args.post is not None:
        payload = json.loads(args.post.read_text(encoding="utf-8"))
        pool = [Request.post_json(p, payload) for p in args.paths]
    else:
        pool = [Request.get(p) for p in args.paths]
    try:
        if args.warmup > 0:
            warmup = [pool[i % len(pool)] for i in range(args.warmup)]
            run(args.base_url, warmup, args.concurrency, timeout=args.timeout, max_seconds=30)
        requests = [pool[i % len(pool)] for i in range(args.requests)]
        report = run(
            args.base_url,
            requests,
            args.concurrency,
            timeout=args.timeout,
            max_seconds=args.max_seconds,
        )
    except ValueError as exc:  # not loopback, bad URL
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.stats()) if args.json else report.summary())
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
