"""What every request goes through before a route: JSON bodies within the size limit."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api.http import problem_response


class BodyLimit:
    """ASGI middleware: bodies are JSON and at most ``limit`` bytes, declared or streamed.

    The body is read here, up to the limit, and replayed to the app: FastAPI turns
    any exception raised while it reads into a 400, so refusing (413) must happen
    before. Bodies are small (64 KiB by default), so buffering costs nothing.
    """

    def __init__(
        self, app: ASGIApp, limit: Callable[[], int], routes: Callable[[], Sequence[BaseRoute]]
    ) -> None:
        self.app = app
        self.limit = limit
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._takes_a_body(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            shown = kind.decode("latin-1")[:100]
            await _refuse(send, 415, f"Content-Type must be application/json, got {shown!r}")
            return
        limit = self.limit()
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, 413, f"request body over {limit} bytes")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _refuse(send, 413, f"request body over {limit} bytes")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _takes_a_body(self, scope: Scope) -> bool:
        """Whether a route takes this method on this path: anything else goes on to the
        router, which answers 404, or 405 with Allow (a PUT on /health is no 415)."""
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return False
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes())


async def _refuse(send: Send, status: int, detail: str) -> None:
    await problem_response(status, detail)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
