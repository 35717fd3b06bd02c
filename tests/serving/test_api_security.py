"""The API's security layer on a small app: tokens, roles, API keys, limits, CORS, audit, logs."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import create_engine, select
from starlette.websockets import WebSocketDisconnect

from serving.request_logging import AccessEntry, configure_logging, log_access, shutdown_logging
from serving.security import (
    AuthError,
    Principal,
    Role,
    SecurityConfigError,
    SecuritySettings,
    authenticate_token,
    install_security,
    issue_token,
    require,
    tokens,
)
from serving.security.audit import AuditRow, AuditWriter, audit_log
from traffic_core.settings import REPO_ROOT

SECRET = "test-secret-" + "s" * 40
INGEST_KEY = "ingest-key-0123456789abcdef"
OPS_KEY = "ops-bot-key-0123456789abcdef"

OPS = (Role.OPERATOR,)
OPS = (Role.OPERATOR,)
ROUTES = {
    "/v1/forecasts": (Role.PLANNER, Role.OPERATOR, Role.SERVICE),
    "/v1/models/promote": (Role.OPERATOR,),
    "/v1/audit": (Role.AUDITOR,),
}


def build_app(settings: SecuritySettings) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    for path, roles in ROUTES.items():
        app.add_api_route(path, _ok, dependencies=[Depends(require(*roles))])

    @app.get("/v1/me")
    async def me(principal: Annotated[Principal, Depends(require())]) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "roles": sorted(principal.roles),
            "via": principal.via,
        }

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket, principal: Annotated[Principal, Depends(require(*OPS))]):
        await ws.accept()
        await ws.send_json({"subject": principal.subject})
        await ws.close()

    @app.websocket("/v1/raw")
    async def raw(ws: WebSocket) -> None:
        """The handler checks the token itself, as a route not using `require` would."""
        try:
            principal = authenticate_token(ws, ws.query_params.get("token", ""))
        except AuthError as error:
            await ws.close(code=1008, reason=error.detail)
            return
        await ws.accept()
        await ws.send_json({"subject": principal.subject})
        await ws.close()

    install_security(app, settings)
    return app


async def _ok() -> dict[str, bool]:
    return {"ok": True}


@pytest.fixture(autouse=True)
def no_security_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own TRAFFIC_API_* settings must not change what these tests see."""
    for name in list(os.environ):
        if name.startswith("TRAFFIC_API_"):
            monkeypatch.delenv(name)


def override(settings: SecuritySettings, **changes: Any) -> SecuritySettings:
    """A validated copy (model_copy would skip validation; model_validate skips the env)."""
    return SecuritySettings.model_validate({**settings.model_dump(), **changes})


@pytest.fixture
def settings(tmp_path: Path) -> SecuritySettings:
    return SecuritySettings(
        jwt_secret=SECRET,
        api_keys=f"ingest:{INGEST_KEY},ops-bot:{OPS_KEY}:operator+auditor",
        rate_limit="1000/second",
        auth_failure_limit="1000/minute",
        audit_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
    )


@pytest.fixture
def make_client(settings: SecuritySettings) -> Iterator[Callable[..., TestClient]]:
    """A client on a fresh app (lifespan started); settings fields can be overridden."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(build_app(override(settings, **overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def bearer(settings: SecuritySettings, *roles: Role, subject: str = "ana", ttl: int = 300):
    return {"Authorization": f"Bearer {issue_token(subject, roles, settings, ttl)}"}


def assert_401(response: Any, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert detail in response.json()["detail"]


# --- authentication -----------------------------------------------------------------------


def test_missing_credentials_are_refused(client: TestClient) -> None:
    assert_401(client.get("/v1/forecasts"), "not authenticated")
    assert_401(client.get("/v1/me", headers={"Authorization": "Basic YTpi"}), "Bearer")


def test_health_needs_no_credentials(client: TestClient) -> None:
    assert client.get("/v1/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("make_token", "detail"),
    [
        (
            lambda s: issue_token(
                "ana",
                [Role.PLANNER],
                override(s, jwt_secret="another-secret-" + "x" * 40),
            ),
            "signature is invalid",
        ),
        (lambda s: issue_token("ana", [Role.PLANNER], s, ttl=-120), "expired"),
        (
            lambda s: issue_token(
                "ana", [Role.PLANNER], override(s, jwt_audience="some-other-api")
            ),
            "audience",
        ),
        (
            lambda s: issue_token("ana", [Role.PLANNER], override(s, jwt_issuer="someone-else")),
            "issuer",
        ),
        (lambda s: "not.a.token", "malformed"),
        (lambda s: "", "Bearer"),
    ],
    ids=["bad-signature", "expired", "wrong-audience", "wrong-issuer", "malformed", "empty"],
)
def test_bad_tokens_are_refused(
    client: TestClient, settings: SecuritySettings, make_token: Any, detail: str
) -> None:
    headers = {"Authorization": f"Bearer {make_token(settings)}"}
    assert_401(client.get("/v1/forecasts", headers=headers), detail)


def test_a_valid_token_names_the_principal(client: TestClient, settings: SecuritySettings) -> None:
    response = client.get("/v1/me", headers=bearer(settings, Role.PLANNER, Role.AUDITOR))
    assert response.json() == {"subject": "ana", "roles": ["auditor", "planner"], "via": "jwt"}
    # The second call is answered from the verified-token cache, with the same result.
    again = client.get("/v1/me", headers=bearer(settings, Role.PLANNER, Role.AUDITOR))
    assert again.json() == response.json()


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("path", list(ROUTES))
def test_each_role_reaches_only_its_endpoints(
    client: TestClient, settings: SecuritySettings, role: Role, path: str
) -> None:
    response = client.get(path, headers=bearer(settings, role))
    if role in ROUTES[path]:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403
        detail = response.json()["detail"]
        assert "requires one of the roles: " + ", ".join(sorted(ROUTES[path])) in detail
        assert f"has: {role}" in detail


def test_a_token_without_roles_is_authenticated_but_forbidden(
    client: TestClient, settings: SecuritySettings
) -> None:
    headers = bearer(settings)
    assert client.get("/v1/me", headers=headers).json()["roles"] == []
    assert "has: none" in client.get("/v1/audit", headers=headers).json()["detail"]


def test_api_keys(client: TestClient) -> None:
    ingest = client.get("/v1/me", headers={"X-API-Key": INGEST_KEY}).json()
    assert ingest == {"subject": "ingest", "roles": ["service"], "via": "api_key"}
    assert client.get("/v1/forecasts", headers={"X-API-Key": INGEST_KEY}).status_code == 200
    assert client.get("/v1/audit", headers={"X-API-Key": INGEST_KEY}).status_code == 403
    assert client.get("/v1/audit", headers={"X-API-Key": OPS_KEY}).status_code == 200
    assert_401(client.get("/v1/forecasts", headers={"X-API-Key": "x" * 30}), "not recognised")


def test_a_request_with_two_credentials_is_refused(
    client: TestClient, settings: SecuritySettings
) -> None:
    headers = {**bearer(settings, Role.PLANNER), "X-API-Key": INGEST_KEY}
    assert_401(client.get("/v1/forecasts", headers=headers), "not both")


def test_websocket_takes_the_token_from_the_query(
    client: TestClient, settings: SecuritySettings
) -> None:
    token = issue_token("olga", [Role.OPERATOR], settings)
    with client.websocket_connect(f"/v1/stream?access_token={token}") as ws:
        assert ws.receive_json() == {"subject": "olga"}
    planner = issue_token("ana", [Role.PLANNER], settings)
    for url in ("/v1/stream", f"/v1/stream?token={planner}"):
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url):
            pass
        assert refused.value.code == 1008


def test_a_handler_can_check_a_socket_token_itself(
    client: TestClient, settings: SecuritySettings
) -> None:
    token = issue_token("olga", [Role.OPERATOR], settings)
    with client.websocket_connect(f"/v1/raw?token={token}") as ws:
        assert ws.receive_json() == {"subject": "olga"}
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/v1/raw?token=forged"),
    ):
        pass
    assert refused.value.code == 1008
    assert refused.value.reason == "token is malformed"


def test_openapi_declares_the_credentials(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyAuth"}
    audit = schema["paths"]["/v1/audit"]["get"]
    assert audit["x-required-roles"] == ["auditor"]
    assert {"401", "403", "429"} <= set(audit["responses"])
    assert "403" not in schema["paths"]["/v1/me"]["get"]["responses"]
    assert "security" not in schema["paths"]["/v1/health"]["get"]


# --- rate limits --------------------------------------------------------------------------


def test_rate_limit_per_principal_with_retry_after(
    make_client: Callable[..., TestClient], settings: SecuritySettings
) -> None:
    # A 2 s window leaves a slow machine ample time to send the five requests inside it.
    client = make_client(rate_limit="5 per 2 seconds")
    ana, bob = bearer(settings, Role.PLANNER), bearer(settings, Role.PLANNER, subject="bob")
    for _ in range(5):
        assert client.get("/v1/forecasts", headers=ana).status_code == 200
    limited = client.get("/v1/forecasts", headers=ana)
    refused_at = time.monotonic()
    assert limited.status_code == 429
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    assert "rate limit exceeded for 'ana'" in limited.json()["detail"]
    assert client.get("/v1/forecasts", headers=bob).status_code == 200, "limits are per subject"
    assert all(client.get("/v1/health").status_code == 200 for _ in range(20))
    time.sleep(max(0.0, refused_at + retry_after - time.monotonic()))
    assert client.get("/v1/forecasts", headers=ana).status_code == 200, "Retry-After was enough"


def test_failed_authentications_are_limited_per_client(
    make_client: Callable[..., TestClient], settings: SecuritySettings
) -> None:
    client = make_client(auth_failure_limit="3/minute")
    guess = {"X-API-Key": "guess" * 5}
    assert [client.get("/v1/forecasts", headers=guess).status_code for _ in range(3)] == [401] * 3
    blocked = client.get("/v1/forecasts", headers=guess)
    assert blocked.status_code == 429, "past the budget, guesses are refused"
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert "too many failed authentications" in blocked.json()["detail"]
    forged = issue_token("ana", [Role.PLANNER], override(settings, jwt_secret="x" * 40))
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(f"/v1/raw?token={forged}"),
    ):
        pass
    assert "too many failed authentications" in refused.value.reason
    assert client.get("/v1/health").status_code == 200


def test_someone_elses_failures_do_not_lock_out_a_valid_credential(
    make_client: Callable[..., TestClient], settings: SecuritySettings
) -> None:
    """Callers behind one address (a NAT, a proxy) share it: past the failure budget, the
    credentials that authenticated lately still get in; a guess is refused unverified, so a
    right one would be refused too (no 200 tells a guesser it guessed right)."""
    client = make_client(auth_failure_limit="3/minute")
    planner = bearer(settings, Role.PLANNER)
    token = issue_token("olga", [Role.OPERATOR], settings)
    assert client.get("/v1/forecasts", headers=planner).status_code == 200
    assert client.get("/v1/forecasts", headers={"X-API-Key": INGEST_KEY}).status_code == 200
    with client.websocket_connect(f"/v1/raw?token={token}") as ws:
        assert ws.receive_json() == {"subject": "olga"}
    for _ in range(10):
        client.get("/v1/forecasts", headers={"X-API-Key": "guess" * 5})
    assert client.get("/v1/forecasts", headers=planner).status_code == 200
    assert client.get("/v1/forecasts", headers={"X-API-Key": INGEST_KEY}).status_code == 200
    with client.websocket_connect(f"/v1/raw?token={token}") as ws:
        assert ws.receive_json() == {"subject": "olga"}
    assert client.get("/v1/forecasts", headers={"X-API-Key": "guess" * 5}).status_code == 429
    unseen = bearer(settings, Role.AUDITOR)  # valid, but never used before the lockout
    refused = client.get("/v1/forecasts", headers=unseen)
    assert refused.status_code == 429 and "too many failed" in refused.json()["detail"]


# --- CORS ---------------------------------------------------------------------------------


def test_cors_preflight_only_for_configured_origins(client: TestClient) -> None:
    def preflight(origin: str) -> Any:
        return client.options(
            "/v1/forecasts",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )

    allowed = preflight("http://localhost:8501")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:8501"
    refused = preflight("https://evil.example")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # Error answers carry CORS headers too, so the dashboard can read a 401's detail.
    denied = client.get("/v1/forecasts", headers={"Origin": "http://127.0.0.1:8501"})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "http://127.0.0.1:8501"
    assert "X-Request-ID" in denied.headers["access-control-expose-headers"]


# --- audit log ----------------------------------------------------------------------------


def audit_rows(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(select(audit_log))]
    engine.dispose()
    return rows


def test_audit_rows_for_allowed_and_refused_calls(
    settings: SecuritySettings, tmp_path: Path
) -> None:
    app = build_app(settings)
    with TestClient(app) as client:
        ok = client.get("/v1/forecasts?sensor=717447", headers=bearer(settings, Role.PLANNER))
        client.get("/v1/audit", headers=bearer(settings, Role.PLANNER, subject="bob"))
        client.get("/v1/audit")
        client.get("/v1/health")
        token = issue_token("olga", [Role.OPERATOR], settings)
        with client.websocket_connect(f"/v1/stream?access_token={token}") as ws:
            ws.receive_json()
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/v1/raw?token=x"):
            pass
        app.state.audit_writer.close()
    rows = sorted(audit_rows(settings.audit_url), key=lambda row: row["id"])
    summary = [(r["subject"], r["auth_method"], r["method"], r["path"], r["status"]) for r in rows]
    assert summary == [
        ("ana", "jwt", "GET", "/v1/forecasts", 200),
        ("bob", "jwt", "GET", "/v1/audit", 403),
        (None, None, "GET", "/v1/audit", 401),
        ("olga", "jwt", "WS", "/v1/stream", 101),
        (None, "jwt", "WS", "/v1/raw", 403),
    ]
    first = rows[0]
    assert first["request_id"] == ok.headers["X-Request-ID"]
    assert first["query"] == "sensor=717447"
    assert first["roles"] == "planner"
    assert first["client"] == "testclient"
    assert first["duration_ms"] >= 0
    assert rows[3]["query"] == "access_token=REDACTED", "tokens never reach the audit log"
    assert app.state.audit_writer.dropped == 0


def test_audit_writer_drops_instead_of_blocking(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    writer = AuditWriter(f"sqlite:///{path}", max_pending=5, flush_seconds=0.05)
    writer.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer thread now waits on its first insert
    row = AuditRow(time.time(), "r", "ana", "planner", "jwt", "GET", "/v1/x", "", 200, 1.0, None)
    began = time.perf_counter()
    for _ in range(50):
        writer.submit(row)
    assert time.perf_counter() - began < 0.5
    blocker.execute("ROLLBACK")
    blocker.close()
    writer.close()
    assert writer.dropped > 0
    assert writer.written + writer.dropped == 50
    assert len(audit_rows(f"sqlite:///{path}")) == writer.written


def test_an_unusable_audit_database_stops_startup(
    settings: SecuritySettings, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    bad = override(settings, audit_url=f"sqlite:///{tmp_path}/a-file/audit.db")
    with pytest.raises(RuntimeError, match="audit log"), TestClient(build_app(bad)):
        pass


@pytest.mark.integration
def test_audit_rows_in_postgresql(settings: SecuritySettings, postgres_server: Any) -> None:
    pg = override(settings, audit_url=postgres_server.url)
    app = build_app(pg)
    with TestClient(app) as client:
        ok = client.get("/v1/forecasts", headers=bearer(pg, Role.SERVICE, subject="pg-test"))
        denied = client.get("/v1/audit", headers=bearer(pg, Role.SERVICE, subject="pg-test"))
        app.state.audit_writer.close()
    ids = {ok.headers["X-Request-ID"]: 200, denied.headers["X-Request-ID"]: 403}
    rows = [row for row in audit_rows(postgres_server.url) if row["request_id"] in ids]
    assert {(row["request_id"], row["status"]) for row in rows} == set(ids.items())
    assert {row["subject"] for row in rows} == {"pg-test"}
    assert rows[0]["ts"].tzinfo is not None


# --- request ids and JSON logs ------------------------------------------------------------


def test_request_id_is_echoed_and_in_the_json_access_log(
    client: TestClient, settings: SecuritySettings
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        response = client.get(
            "/v1/forecasts", headers={**bearer(settings, Role.PLANNER), "X-Request-ID": "trace-42"}
        )
        forged = client.get("/v1/health", headers={"X-Request-ID": "bad id\n{}"})
    finally:
        shutdown_logging()
    assert response.headers["X-Request-ID"] == "trace-42"
    assert forged.headers["X-Request-ID"] != "bad id\n{}"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "serving.access"]
    first = next(line for line in access if line["request_id"] == "trace-42")
    assert first["path"] == "/v1/forecasts"
    assert first["status"] == 200
    assert first["subject"] == "ana"
    assert first["method"] == "GET"
    assert first["duration_ms"] >= 0
    assert first["level"] == "INFO"
    assert any(line["request_id"] == forged.headers["X-Request-ID"] for line in access)


def test_access_lines_are_the_same_deferred_or_through_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The JSON handler builds access records on its writer thread; without it (logging set up
    by someone else) `log_access` goes through the logger: both give the same fields."""
    entry = AccessEntry("GET", "/v1/forecasts/717447", 200, 0.25, "ana", "127.0.0.1")
    with caplog.at_level("INFO", logger="serving.access"):
        log_access(entry)
    direct = caplog.records[-1]
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)  # replaces the root's handlers, caplog's too
    try:
        before = time.time()
        log_access(entry)
    finally:
        shutdown_logging()
    deferred = json.loads(stream.getvalue())
    assert deferred["message"] == direct.getMessage() == "GET /v1/forecasts/717447 200"
    for name, value in entry._asdict().items():
        assert deferred[name] == getattr(direct, name) == value
    assert deferred["logger"] == direct.name == "serving.access"
    assert deferred["level"] == direct.levelname == "INFO"
    stamp = datetime.fromisoformat(deferred["timestamp"]).timestamp()
    assert before - 1 <= stamp <= time.time(), "the line keeps the request's time, not the write's"


# --- settings and the tokens CLI ----------------------------------------------------------


def test_no_secret_stops_startup() -> None:
    with pytest.raises(SecurityConfigError, match="TRAFFIC_API_JWT_SECRET"):
        install_security(FastAPI(), SecuritySettings(jwt_secret=None))


def test_settings_refuse_weak_or_open_configuration() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        SecuritySettings(jwt_secret="short")
    with pytest.raises(ValidationError, match="explicitly"):
        SecuritySettings(cors_origins="*")
    with pytest.raises(ValidationError, match="shorter than"):
        SecuritySettings(api_keys="svc:short")
    with pytest.raises(ValidationError):
        SecuritySettings(api_keys=f"svc:{INGEST_KEY}:superuser")
    with pytest.raises(ValidationError):
        SecuritySettings(rate_limit="lots")


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    digest = hashlib.sha256(OPS_KEY.encode()).hexdigest()
    monkeypatch.setenv("TRAFFIC_API_JWT_SECRET", SECRET)
    monkeypatch.setenv(
        "TRAFFIC_API_KEYS", json.dumps([{"name": "ops", "sha256": digest, "roles": ["operator"]}])
    )
    monkeypatch.setenv("TRAFFIC_API_CORS_ORIGINS", "https://dash.example, http://localhost:8501/")
    monkeypatch.setenv("TRAFFIC_API_RATE_LIMIT", "50/second")
    monkeypatch.setenv("TRAFFIC_API_JWT_AUDIENCE", "")
    settings = SecuritySettings()
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == SECRET
    assert [(key.name, key.roles) for key in settings.api_keys] == [("ops", {Role.OPERATOR})]
    assert settings.cors_origins == ["https://dash.example", "http://localhost:8501"]
    assert settings.rate_limit == "50/second"
    assert settings.jwt_audience is None
    assert SECRET not in repr(settings)


def test_tokens_cli_prints_a_token_the_api_accepts(
    client: TestClient, settings: SecuritySettings
) -> None:
    cli = [sys.executable, "-m", "serving.security.tokens", "--subject", "demo"]
    result = subprocess.run(
        [*cli, "--role", "planner", "--role", "operator", "--ttl", "120"],
        env={**os.environ, "TRAFFIC_API_JWT_SECRET": SECRET},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    token = result.stdout.strip()
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me == {"subject": "demo", "roles": ["operator", "planner"], "via": "jwt"}


def test_tokens_cli_without_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert tokens.main(["--subject", "demo", "--role", "planner"]) == 2
    assert "TRAFFIC_API_JWT_SECRET is not set" in capsys.readouterr().err
