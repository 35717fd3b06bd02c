"""Every error the API answers is an RFC 9457 problem (`application/problem+json`).

One renderer serves FastAPI's exception handlers and the pure ASGI layers that answer before
routing (body limits, the one-sensor fast path), so a client parses one shape whatever refused
it: `type`, `title`, `status`, `detail`, `instance` (the request path) and, for 422, an `errors`
list. The X-Request-ID header of the answer finds the request in the access log and audit table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from serving.request_logging import REQUEST_ID_HEADER, current_request_id
from serving.route_table import api_routes
from serving.schemas import Problem
from serving.service import NotReady

PROBLEM_JSON = "application/problem+json"
NOT_READY_RETRY_SECONDS = "5"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem(
    conn: HTTPConnection,
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
) -> ProblemResponse:
    """The problem response for `conn`'s request (`type` about:blank: the status says it)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": conn.scope.get("path", ""),
    }
    if errors is not None:
        body["errors"] = list(errors)
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def validation_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """Where and why each field failed, without echoing the input (it may be huge, hold a
    credential, or be a NaN that JSON cannot carry)."""
    return [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in raw
    ]


def _summary(errors: Sequence[Mapping[str, Any]]) -> str:
    shown = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(shown) + more


async def http_error(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, StarletteHTTPException)
    detail = error.detail if isinstance(error.detail, str) else str(error.detail)
    # A 422 a handler raised (readings that cannot be forecast) is about the body as a whole.
    errors = [{"loc": ["body"], "msg": detail, "type": "value_error"}]
    return problem(
        request,
        error.status_code,
        detail,
        error.headers,
        errors if error.status_code == 422 else None,
    )


async def invalid_request(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, RequestValidationError)
    errors = validation_errors(error.errors())
    return problem(request, 422, _summary(errors) or "invalid request", errors=errors)


async def not_ready(request: Request, error: Exception) -> ProblemResponse:
    headers = {"Retry-After": NOT_READY_RETRY_SECONDS}
    return problem(request, 503, str(error), headers)


async def server_error(request: Request, error: Exception) -> ProblemResponse:
    """Last resort (Starlette logs the traceback): a problem body without internals. It is
    answered outside the request-id middleware, so the X-Request-ID header is set here."""
    request_id = current_request_id()
    return problem(
        request,
        500,
        "internal error; quote the X-Request-ID when reporting it",
        {REQUEST_ID_HEADER: request_id} if request_id else None,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(NotReady, not_ready)
    app.add_exception_handler(Exception, server_error)
    _document_problems(app)


ERROR_STATUSES = {
    "400": "The body could not be read (nested too deeply, a malformed Content-Length)",
    "401": "Missing or invalid credentials",
    "403": "Authenticated, but without a role this endpoint requires",
    "404": "Not found",
    "413": "The body is larger than the API accepts",
    "415": "The body is not application/json",
    "422": "The request does not match the schema; `errors` lists each field",
    "429": "Rate limit exceeded; see Retry-After",
    "503": "No model or no live data yet; see Retry-After",
}
"""Descriptions of the error statuses declared on operations."""


def _document_problems(app: FastAPI) -> None:
    """In the OpenAPI schema, every error response of every operation is a Problem, and
    operations taking a body also declare 400/413/415/422."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(_problem_schemas())
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        reference = {"$ref": "#/components/schemas/Problem"}
        for route in api_routes(app):
            if not route.include_in_schema:
                continue
            for method in route.methods or ():
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                if route.body_field is not None:
                    for status in ("400", "413", "415", "422"):
                        responses.setdefault(status, {})
                for status, answer in list(responses.items()):
                    if status[0] in "45":
                        responses[status] = {
                            "description": ERROR_STATUSES.get(status, "Error"),
                            **answer,
                            "content": {PROBLEM_JSON: {"schema": reference}},
                        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_schemas() -> dict[str, Any]:
    definitions = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"Problem": definitions, **definitions.pop("$defs", {})}
