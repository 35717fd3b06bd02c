"""Authentication, roles, rate limits, CORS, audit log and request ids for the prediction API.

Wiring, once per app (before it starts)::

    security = install_security(app, SecuritySettings())

    @router.get("/v1/forecast", dependencies=[Depends(require(Role.PLANNER, Role.OPERATOR))])
    ...
    @router.get("/v1/me")
    async def me(principal: Annotated[Principal, Depends(require())]) -> dict: ...

WebSockets use the same dependency (token in `?access_token=` or `?token=`), or call
`authenticate_token(websocket, token)` themselves. Logging is a process concern: call
`serving.request_logging.configure_logging()` once at startup.
"""

from __future__ import annotations

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.middleware.cors import CORSMiddleware

from serving.request_logging import REQUEST_ID_HEADER, new_request_id, valid_request_id
from serving.route_table import api_routes
from serving.security.audit import AuditMiddleware, AuditWriter
from serving.security.auth import (
    API_KEY_HEADER,
    Authenticator,
    AuthError,
    Principal,
    Security,
    admit,
    authenticate_token,
    issue_token,
    require,
)
from serving.security.headers import SecurityHeadersMiddleware
from serving.security.settings import Role, SecurityConfigError, SecuritySettings

__all__ = [
    "AuthError",
    "Authenticator",
    "Principal",
    "Role",
    "Security",
    "SecurityConfigError",
    "SecuritySettings",
    "admit",
    "authenticate_token",
    "install_security",
    "issue_token",
    "require",
]


def install_security(app: FastAPI, settings: SecuritySettings | None = None) -> Security:
    """Put the authenticator and limits on `app.state.security`, the audit writer on
    `app.state.audit_writer`, and add the middleware (outermost first): request id, access log
    and audit, security headers, CORS. Raises SecurityConfigError when no JWT secret is
    configured."""
    settings = settings or SecuritySettings()
    security = Security.from_settings(settings)
    writer = (
        AuditWriter(
            settings.audit_url,
            spill_dir=settings.audit_spill_dir,
            drain_seconds=settings.audit_drain_seconds,
            flush_seconds=settings.audit_flush_seconds,
        )
        if settings.audit_enabled
        else None
    )
    app.state.security = security
    app.state.audit_writer = writer
    # add_middleware wraps what is already there, so the last one added runs first.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", API_KEY_HEADER, REQUEST_ID_HEADER],
        expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        max_age=600,
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(AuditMiddleware, writer=writer)
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name=REQUEST_ID_HEADER,
        generator=new_request_id,
        validator=valid_request_id,
    )
    _document_security(app)
    return security


SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_REFUSALS = {
    "401": {"description": "Missing or invalid credentials"},
    "403": {"description": "Authenticated, but without a role this endpoint requires"},
    "429": {"description": "Rate limit exceeded; see Retry-After"},
}


def _required_roles(dependant: Dependant) -> frozenset[Role] | None:
    for sub in dependant.dependencies:
        roles = getattr(sub.call, "required_roles", None)
        if roles is None:
            roles = _required_roles(sub)
        if roles is not None:
            return roles
    return None


def _document_security(app: FastAPI) -> None:
    """Declare the credentials in the OpenAPI schema (so /docs can send a token and clients
    know the 401/403/429 answers) for every route guarded by `require`."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(
            SECURITY_SCHEMES
        )
        for route in api_routes(app):
            if not route.include_in_schema:
                continue
            roles = _required_roles(route.dependant)
            if roles is None:
                continue
            for method in route.methods or ():
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                responses = operation.setdefault("responses", {})
                responses.update(_REFUSALS)
                if not roles:  # any authenticated caller: no role check, no 403
                    del responses["403"]
                if roles:
                    operation["x-required-roles"] = sorted(roles)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
