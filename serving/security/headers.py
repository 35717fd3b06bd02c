"""Response headers that keep browsers from misusing the API's answers.

Every response says: do not sniff content types, never frame me, send no referrer. Over HTTPS
it also says Strict-Transport-Security, so a browser that has once reached the API securely
never falls back to plain HTTP (the header means nothing over HTTP and is not sent there).
Pure ASGI and precomputed, so each response pays for one list extension only.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS_SECONDS = 365 * 24 * 3600

_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]
_HTTPS = [(b"strict-transport-security", f"max-age={HSTS_SECONDS}".encode())]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _ALWAYS + _HTTPS if scope.get("scheme") == "https" else _ALWAYS

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
