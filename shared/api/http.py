"""HTTP semantics every route shares: one error shape, HEAD, and conditional GETs.

Errors are ``application/problem+json`` (RFC 9457): ``type``, ``title``, ``status``,
``detail``, plus ``errors`` (where and what) for a request that fails validation;
the input is never echoed back. GET answers carry a strong ``ETag`` (a digest of the
body: it changes exactly when the answer does, e.g. with a new recommendations
version) and ``Cache-Control``; ``If-None-Match`` with it gets a 304 and no body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str] = Field(description='where, e.g. ["query", "n"] or ["body", "attributes"]')
    type: str = Field(description="what kind of error, e.g. less_than_equal, string_pattern")
    msg: str


class Problem(BaseModel):
    """Every error (RFC 9457 problem details)."""

    type: str = Field("about:blank", description="about:blank: the status says it all")
    title: str = Field(description="the status's name, e.g. Not Found")
    status: int
    detail: str = Field(description="what is wrong, in one sentence")
    errors: list[FieldError] | None = Field(
        None, description="a request that fails validation: each field and what is wrong"
    )


def problem_response(
    status: int,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def field_errors(raw: list[Any], known: Collection[str]) -> list[dict[str, Any]]:
    """Pydantic's errors as where and what, without the input (it could hold NaN, which
    is not JSON, or 64 KiB): a location step that is not a ``known`` field name or a
    position (a dict key, an unknown field) came from the client and reads ``*``."""
    return [
        {
            "loc": [str(p) if isinstance(p, int) or p in known else "*" for p in e.get("loc", ())],
            "type": str(e.get("type")),
            "msg": e.get("msg"),
        }
        for e in raw
    ]


def retry_after(request: Request) -> dict[str, str]:
    """When to try again after a 503: at the next check for a new version."""
    try:
        seconds = request.app.state.serving.settings().serving.refresh_seconds
    except Exception:  # the settings themselves may be what is unavailable
        seconds = DEFAULT_RETRY_SECONDS
    return {"Retry-After": str(max(1, int(seconds)))}


DEFAULT_RETRY_SECONDS = 30


def cached(request: Request, body: bytes, max_age: float) -> Response:
    """A JSON answer with a strong ETag and Cache-Control, or 304 when the client
    already holds it (If-None-Match)."""
    tag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    headers = {"ETag": tag, "Cache-Control": f"private, max-age={int(max_age)}"}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 13.1.2: ``*`` or any listed tag, compared weakly (a W/ prefix ignored)."""
    if not if_none_match:
        return False
    listed = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in listed or tag in listed


class HeadAsGet:
    """ASGI middleware: HEAD answered as GET without the body (RFC 9110 9.3.2), so that
    every GET route also serves HEAD without appearing twice in the schema."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
