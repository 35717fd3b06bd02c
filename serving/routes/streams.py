"""Live forecasts and alerts as WebSocket and Server-Sent Events streams.

Each message is JSON {"type": "forecasts" | "alert", "data": ForecastBatch | Alert}. Browsers
cannot set headers on a WebSocket, so it also accepts the bearer token as `?access_token=`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from sse_starlette.sse import EventSourceResponse

from serving.routes.access import STREAM, allow
from serving.routes.common import service

router = APIRouter(prefix="/v1/stream", tags=["streams"])


@router.get(
    "/sse",
    dependencies=allow(*STREAM),
    response_class=EventSourceResponse,
    include_in_schema=False,  # an endless stream: documented in the README, not fuzzable
)
async def sse(request: Request) -> EventSourceResponse:
    """Server-Sent Events: one `data:` line per message, a ping every 15 s."""
    broadcaster = service(request).broadcaster

    async def events() -> AsyncIterator[dict]:
        async with broadcaster.subscribe() as queue:
            while True:
                data = await queue.get()
                yield {"data": data.decode()}

    return EventSourceResponse(events(), ping=15)


@router.websocket("/ws", dependencies=allow(*STREAM))
async def websocket(socket: WebSocket) -> None:
    """Pushes every message until the client goes away; a slow client loses old messages."""
    await socket.accept()
    async with service(socket).broadcaster.subscribe() as queue:
        receiver = asyncio.create_task(_drain(socket))
        try:
            while not receiver.done():
                sender = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({sender, receiver}, return_when="FIRST_COMPLETED")
                if sender in done:
                    await socket.send_text(sender.result().decode())
                else:
                    sender.cancel()
        except WebSocketDisconnect:
            pass
        finally:
            receiver.cancel()


async def _drain(socket: WebSocket) -> None:
    """Read (and ignore) client frames so a disconnect is noticed."""
    try:
        while True:
            await socket.receive_text()
    except WebSocketDisconnect:
        return
