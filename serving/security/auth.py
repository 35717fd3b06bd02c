"""Who is calling (JWT bearer token or service API key) and whether they may.

`require(*roles)` is the one FastAPI dependency routes use: it authenticates, spends the caller's
rate-limit budget, checks the roles, and leaves the Principal in `scope["state"]` for the audit
middleware. Everything it needs hangs off `app.state.security` (see `install_security`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import jwt
from fastapi import HTTPException, WebSocketException, status
from fastapi.requests import HTTPConnection
from jwt.types import Options

from serving.security.ratelimit import RateLimited, RateLimits
from serving.security.settings import Role, SecuritySettings

AuthMethod = Literal["jwt", "api_key"]

API_KEY_HEADER = "x-api-key"
WS_TOKEN_PARAMS = ("access_token", "token")
"""Browsers cannot set headers on a WebSocket handshake, so sockets may pass the JWT here."""

STATE_PRINCIPAL = "principal"
STATE_AUTH_METHOD = "auth_method"
"""Keys in `scope["state"]`; their presence marks a request the audit log records."""

_ROLE_NAMES = frozenset(Role)
_TOKEN_CACHE_SIZE = 10_000
_WS_POLICY_VIOLATION = 1008
_WS_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[Role]
    via: AuthMethod


class AuthError(Exception):
    """Credentials missing or not acceptable (HTTP 401)."""

    def __init__(self, detail: str, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.detail = detail
        self.error = error

    @property
    def www_authenticate(self) -> str:
        """RFC 6750 §3: no error code when the request simply carried no credentials."""
        if self.error is None:
            return 'Bearer realm="metr-traffic"'
        return f'Bearer realm="metr-traffic", error="{self.error}"'


_JWT_ERRORS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAudienceError, "token audience is not accepted by this API"),
    (jwt.InvalidIssuerError, "token issuer is not accepted by this API"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidAlgorithmError, "token signing algorithm is not accepted"),
    (jwt.DecodeError, "token is malformed"),
)


class Authenticator:
    """Verifies credentials against the settings; decoded tokens are cached until they expire
    (verifying an HS256 JWT costs ~70 µs, a cache hit ~1 µs)."""

    def __init__(self, settings: SecuritySettings) -> None:
        self._secret = settings.require_jwt_secret()
        self._algorithms = [settings.jwt_algorithm]
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        required = ["exp", "sub"] + (["iss"] if self._issuer else [])
        self._options: Options = {"require": required}
        self._keys = [
            (key.digest, Principal(key.name, key.roles, "api_key")) for key in settings.api_keys
        ]
        self._verified: dict[str, tuple[Principal, float]] = {}

    def authenticate_token(self, token: str) -> Principal:
        if not token:
            raise AuthError("not authenticated: no token given", None)
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached[1] + self._leeway:
            return cached[0]
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            detail = next((text for kind, text in _JWT_ERRORS if isinstance(exc, kind)), None)
            raise AuthError(detail or f"token is invalid: {exc}") from None
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise AuthError("token lacks a 'roles' list")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError("token subject must be a non-empty string")
        known = frozenset(Role(role) for role in roles if role in _ROLE_NAMES)
        principal = Principal(subject, known, "jwt")
        if len(self._verified) >= _TOKEN_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]))
        return principal

    def authenticate_api_key(self, key: str) -> Principal:
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for known, principal in self._keys:  # no early exit: same work for every key
            if hmac.compare_digest(digest, known):
                found = principal
        if found is None:
            raise AuthError("API key is not recognised")
        return found

    def credentials(self, conn: HTTPConnection) -> tuple[AuthMethod, str]:
        """Which credential the request carries; exactly one is accepted."""
        authorization = conn.headers.get("authorization")
        api_key = conn.headers.get(API_KEY_HEADER)
        if authorization is None and conn.scope["type"] == "websocket":
            params = conn.query_params
            token = next((params[name] for name in WS_TOKEN_PARAMS if name in params), None)
            if token is not None:
                authorization = f"Bearer {token}"
        if authorization is not None and api_key is not None:
            raise AuthError("send a bearer token or an X-API-Key, not both", "invalid_request")
        if api_key is not None:
            return "api_key", api_key
        if authorization is None:
            raise AuthError("not authenticated: send 'Authorization: Bearer <token>'", None)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("expected 'Authorization: Bearer <token>'", "invalid_request")
        return "jwt", token.strip()


@dataclass(frozen=True, slots=True)
class Security:
    """What `require` needs per request, stored once on `app.state.security`."""

    settings: SecuritySettings
    authenticator: Authenticator
    limits: RateLimits

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> Security:
        return cls(
            settings,
            Authenticator(settings),
            RateLimits(settings.rate_limit, settings.auth_failure_limit),
        )


def security_of(conn: HTTPConnection) -> Security:
    try:
        return conn.app.state.security
    except AttributeError:
        raise RuntimeError("call serving.security.install_security(app) first") from None


def authenticate_token(conn: HTTPConnection, token: str) -> Principal:
    """Verify a JWT the handler received itself (e.g. a WebSocket's `?token=`); raises AuthError.

    Counts failures against the client's budget and records the principal for the audit log,
    like `require` (which routes should prefer: it also applies the per-principal rate limit).
    """
    security = security_of(conn)
    client = conn.client.host if conn.client else "unknown"
    state = conn.scope.setdefault("state", {})
    state[STATE_PRINCIPAL] = None
    state[STATE_AUTH_METHOD] = "jwt"
    try:
        principal = _verified(
            security, client, token, lambda: security.authenticator.authenticate_token(token)
        )
    except RateLimited as exc:
        raise AuthError(exc.detail) from None
    state[STATE_PRINCIPAL] = principal
    return principal


def _verified(
    security: Security, client: str, credential: str, verify: Callable[[], Principal]
) -> Principal:
    """`verify()` under the failure budget of `client`: past it only a credential that
    authenticated lately is verified (RateLimited otherwise); failures are counted."""
    security.limits.admit_attempt(client, credential)
    try:
        principal = verify()
    except AuthError:
        security.limits.record_failure(client)  # past the budget: RateLimited
        raise
    security.limits.record_success(credential)
    return principal


def issue_token(
    subject: str,
    roles: Iterable[Role | str],
    settings: SecuritySettings,
    ttl: int | timedelta = 3600,
) -> str:
    """A signed token for demos, tests and the tokens CLI (production tokens come from an IdP
    sharing the same secret, issuer and audience)."""
    now = int(time.time())
    seconds = int(ttl.total_seconds()) if isinstance(ttl, timedelta) else int(ttl)
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": sorted(Role(role).value for role in roles),
        "iat": now,
        "exp": now + seconds,
        "jti": uuid.uuid4().hex,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.require_jwt_secret(), algorithm=settings.jwt_algorithm)


def _reject(conn: HTTPConnection, code: int, detail: str, headers: dict[str, str]) -> Exception:
    if conn.scope["type"] == "websocket":
        close = _WS_TRY_AGAIN_LATER if code == status.HTTP_429_TOO_MANY_REQUESTS else None
        return WebSocketException(close or _WS_POLICY_VIOLATION, detail[:120])
    return HTTPException(code, detail, headers=headers or None)


def _authenticate(conn: HTTPConnection, state: dict[str, Any]) -> Principal:
    security = security_of(conn)
    client = conn.client.host if conn.client else "unknown"
    state[STATE_PRINCIPAL] = None
    try:
        try:
            method, credential = security.authenticator.credentials(conn)
        except AuthError:  # no credential at all, or an unusable header
            security.limits.record_failure(client)  # past the budget: RateLimited
            raise
        state[STATE_AUTH_METHOD] = method
        verify = (
            security.authenticator.authenticate_token
            if method == "jwt"
            else security.authenticator.authenticate_api_key
        )
        principal = _verified(security, client, credential, lambda: verify(credential))
        state[STATE_PRINCIPAL] = principal
        security.limits.hit_principal(principal.via, principal.subject)
    except AuthError as exc:
        headers = {"WWW-Authenticate": exc.www_authenticate}
        raise _reject(conn, status.HTTP_401_UNAUTHORIZED, exc.detail, headers) from None
    except RateLimited as exc:
        headers = {"Retry-After": str(exc.retry_after)}
        raise _reject(conn, status.HTTP_429_TOO_MANY_REQUESTS, exc.detail, headers) from None
    return principal


def admit(conn: HTTPConnection, allowed: frozenset[Role]) -> Principal:
    """Authenticate `conn` (once per request), spend its rate-limit budget and check that it
    holds one of `allowed` (any authenticated caller when empty); raises the HTTP (or
    WebSocket) error to answer with. `require` wraps this for FastAPI; a pure ASGI fast path
    calls it directly, so both admit callers by the same rules."""
    state = conn.scope.setdefault("state", {})
    principal = state.get(STATE_PRINCIPAL)
    if principal is None:  # a second check on the same request reuses the first
        principal = _authenticate(conn, state)
    if allowed and allowed.isdisjoint(principal.roles):
        held = ", ".join(sorted(principal.roles)) or "none"
        names = ", ".join(sorted(allowed))
        detail = f"requires one of the roles: {names} ({principal.subject} has: {held})"
        raise _reject(conn, status.HTTP_403_FORBIDDEN, detail, {})
    return principal


def require(*roles: Role) -> Callable[[HTTPConnection], Awaitable[Principal]]:
    """A dependency admitting callers holding any of `roles` (any authenticated caller when
    none are given); use in `dependencies=[Depends(...)]` or as a parameter for the Principal.

    Async on purpose: a sync dependency would cost a threadpool hop on every request.
    """
    allowed = frozenset(Role(role) for role in roles)

    async def dependency(conn: HTTPConnection) -> Principal:
        return admit(conn, allowed)

    dependency.__name__ = f"require_{'_or_'.join(sorted(allowed)) or 'authenticated'}"
    dependency.required_roles = allowed  # type: ignore[attr-defined]  # read for OpenAPI
    return dependency
