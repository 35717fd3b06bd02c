"""Request bodies are admitted before they are read, and read only up to a limit.

FastAPI reads and parses a body before it solves a route's dependencies, so without this layer
an unauthenticated caller could make the API buffer and parse any amount of JSON before the
401. For a request that carries a body this pure ASGI layer, in order:

1. authenticates it when its route is guarded (`admit` with the route's roles; the route's own
   check then reuses the principal), answering 401/403/429 without reading a byte of it;
2. refuses a body whose Content-Length exceeds the limit (413), and one that is not JSON on a
   route taking JSON (415);
3. counts the bytes as they stream in and stops reading at the limit (413), so a chunked body
   without a length cannot grow the process either.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.problems import problem
from serving.route_table import route_for
from serving.security import admit

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLOSE = {"Connection": "close"}
"""On refusals of a body not read (to its end): the server closes the connection instead of
draining whatever the client still sends."""


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the streamed body passes the limit; FastAPI re-raises
    HTTPExceptions from body reading, so its handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes", headers=CLOSE)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _roles_of(route: Any) -> frozenset | None:
    """The roles `require` admits on this route (None: the route is open)."""
    for dependant in route.dependant.dependencies:
        roles = getattr(dependant.call, "required_roles", None)
        if roles is not None:
            return roles
    return None


class BodyGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        route = route_for(scope)
        roles = _roles_of(route) if route is not None else None
        if roles is not None:
            try:
                admit(conn, roles)
            except HTTPException as refused:
                headers = {**(refused.headers or {}), **CLOSE}
                await problem(conn, refused.status_code, refused.detail, headers)(
                    scope, receive, send
                )
                return
        refusal = self._refusal(conn.headers, route)
        if refusal is not None:
            await problem(conn, *refusal, CLOSE)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _refusal(self, headers: Headers, route: Any | None) -> tuple[int, str] | None:
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "Content-Length is not a number"
            if int(length) > self.limit:
                return 413, f"request body of {length} bytes; the limit is {self.limit}"
        has_body = length not in (None, "0") or "transfer-encoding" in headers
        content_type = headers.get("content-type")
        takes_json = route is not None and route.body_field is not None
        if takes_json and has_body and content_type is not None and not _is_json(content_type):
            return 415, f"send the body as application/json, not {content_type[:100]!r}"
        return None

    def _counting(self, receive: Receive) -> Receive:
        limit = self.limit
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted
