"""The routes the API serves, as its own layers need to see them.

FastAPI includes a router lazily: `app.routes` lists the included router, not its routes. The
OpenAPI hooks, the body guard and the fast path need each route with its full path, methods and
dependencies, so they walk the effective routes through FastAPI's own iterator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.routing import Match
from starlette.types import Scope


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Each HTTP route of the app (path, path_format, methods, dependant, endpoint)."""
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def websocket_paths(app: FastAPI) -> Iterator[str]:
    """The path of each WebSocket route."""
    for context in iter_route_contexts(app.routes):
        if isinstance(route := context.original_route, APIWebSocketRoute):
            yield route.path


def route_for(scope: Scope) -> Any | None:
    """The HTTP route that will answer this request, before the router has picked it."""
    for route in api_routes(scope["app"]):
        if route.matches(scope)[0] is Match.FULL:
            return route
    return None
