"""Hostile input to the prediction API: every refusal is a 4xx RFC 9457 problem, never a 500;
bodies are authenticated before they are read and read only up to the limit; speeds are JSON
numbers; nothing a caller sends as a credential reaches a log line; files holding logs and
secrets are private. The app runs with the real model (live feed off)."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_fixtures import JWT_SECRET, ApiServer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from serving.app import create_app
from serving.security import SecuritySettings, issue_token
from serving.settings import ApiSettings
from traffic_core.redaction import REDACTED, redact

SENSOR = "773869"
LIMIT = 64 * 1024
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def token(role: str = "planner") -> str:
    """Made at collection too: valid for however long the session runs before this module."""
    return issue_token("hostile", [role], SecuritySettings(jwt_secret=JWT_SECRET), ttl=4 * 3600)


PLANNER = {"Authorization": f"Bearer {token()}"}
JSON = {"content-type": "application/json"}


def make_app(model_registry: Path, **security: Any) -> FastAPI:
    return create_app(
        ApiSettings(model_dir=model_registry, live=False, publish=False, max_body_bytes=LIMIT),
        SecuritySettings(
            **{"jwt_secret": JWT_SECRET, "rate_limit": "100000/second", "audit_enabled": False}
            | security
        ),
    )


@pytest.fixture(scope="module")
def client(model_registry: Path) -> Iterator[TestClient]:
    with TestClient(make_app(model_registry, auth_failure_limit="")) as test_client:
        yield test_client


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and body["type"] == "about:blank"
    assert body["instance"] == answer.request.url.path
    return body


def readings_body(speed: str) -> str:
    """A POST /v1/forecasts body with `speed` as the raw JSON text of speed_mph."""
    reading = f'{{"sensor_id": "{SENSOR}", "timestamp": "2012-03-06T08:00", "speed_mph": {speed}}}'
    return f'{{"readings": [{reading}]}}'


def speed_errors(answer: httpx.Response) -> list[dict[str, Any]]:
    if answer.status_code != 422:
        return []
    return [e for e in answer.json()["errors"] if e["loc"][-1:] == ["speed_mph"]]


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", '"55"', "true", '"NaN"'])
def test_non_numbers_as_speeds_are_422_problems(client: TestClient, literal: str) -> None:
    answer = client.post("/v1/forecasts", content=readings_body(literal), headers=PLANNER | JSON)
    body = assert_problem(answer, 422)
    assert [e["loc"] for e in body["errors"]] == [["body", "readings", 0, "speed_mph"]]
    assert "speed_mph" in body["detail"]


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)


@FUZZ
@given(speed=JSON_SCALARS)
def test_only_finite_json_numbers_in_range_are_speeds(client: TestClient, speed: Any) -> None:
    answer = client.post(
        "/v1/forecasts", content=readings_body(json.dumps(speed)), headers=PLANNER | JSON
    )
    assert answer.status_code != 500
    is_speed = speed is None or (
        isinstance(speed, int | float)
        and not isinstance(speed, bool)
        and 0 <= speed <= 120  # False for NaN
    )
    assert (speed_errors(answer) == []) == is_speed, (speed, answer.text)
    if answer.status_code >= 400:
        assert_problem(answer, answer.status_code)


@FUZZ
@given(body=st.binary(max_size=2000))
def test_arbitrary_bytes_are_a_4xx_problem(client: TestClient, body: bytes) -> None:
    answer = client.post("/v1/forecasts", content=body, headers=PLANNER | JSON)
    assert 400 <= answer.status_code < 500
    assert_problem(answer, answer.status_code)


@pytest.mark.parametrize(
    "body",
    ["[" * 50_000, '{"readings": ' * 3_000, '{"readings": []}', "{}", "null", ""],
    ids=["deep-arrays", "deep-objects", "no-readings", "empty-object", "null", "empty"],
)
def test_degenerate_json_is_a_4xx_problem(client: TestClient, body: str) -> None:
    answer = client.post("/v1/forecasts", content=body, headers=PLANNER | JSON)
    assert answer.status_code in (400, 422)
    assert_problem(answer, answer.status_code)


# --- sizes, order of checks, media types -------------------------------------------------


def test_a_declared_oversize_body_is_413_by_its_length(client: TestClient) -> None:
    headers = PLANNER | JSON | {"content-length": str(LIMIT + 1)}
    answer = client.post("/v1/forecasts", content=b"{" * (LIMIT + 1), headers=headers)
    assert str(LIMIT) in assert_problem(answer, 413)["detail"]


def test_an_unauthenticated_body_is_401_whatever_its_size(client: TestClient) -> None:
    for size in (10, LIMIT * 4):
        answer = client.post("/v1/forecasts", content=b"x" * size, headers=JSON)
        assert_problem(answer, 401)
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_body_outside_the_callers_roles_is_403(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {token('auditor')}"} | JSON
    assert_problem(client.post("/v1/forecasts", content=b"[", headers=headers), 403)


def test_a_body_that_is_not_json_is_415(client: TestClient) -> None:
    headers = PLANNER | {"content-type": "text/csv"}
    answer = client.post("/v1/forecasts", content=b"sensor_id,speed\n1,2\n", headers=headers)
    assert "application/json" in assert_problem(answer, 415)["detail"]


class Upload:
    """An ASGI receive() yielding `chunk` bytes without end, counting what was taken."""

    def __init__(self, chunk: int = 1024) -> None:
        self.chunk = chunk
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        self.taken += 1
        return {"type": "http.request", "body": b" " * self.chunk, "more_body": True}


async def call(app: FastAPI, headers: dict[str, str], upload: Upload) -> tuple[int, bytes]:
    """POST /v1/forecasts with a chunked body of no declared length, straight through ASGI."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/forecasts",
        "raw_path": b"/v1/forecasts",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    await app(scope, upload, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_a_streamed_body_is_read_only_up_to_the_limit(client: TestClient) -> None:
    """A body without a length that never ends: the API stops reading just past the limit."""
    upload = Upload()
    status, body = asyncio.run(call(client.app, PLANNER | JSON, upload))
    assert status == 413, body
    assert json.loads(body)["status"] == 413
    assert upload.taken == LIMIT // upload.chunk + 1
    anonymous = Upload()
    assert asyncio.run(call(client.app, JSON, anonymous))[0] == 401
    assert anonymous.taken == 0, "an unauthenticated body is not read at all"


# --- every error is a problem, and documented as one --------------------------------------


def test_every_error_status_is_a_problem(client: TestClient, model_registry: Path) -> None:
    version = client.app.state.service.holder.registry.latest()
    auditor = {"Authorization": f"Bearer {token('auditor')}"}
    assert_problem(client.get("/v1/sensors"), 401)
    assert_problem(client.get("/v1/sensors", headers={"Authorization": "Bearer x.y.z"}), 401)
    assert_problem(client.get("/v1/admin/reload-model", headers=PLANNER), 405)
    assert_problem(client.post("/v1/admin/reload-model", headers=PLANNER), 403)
    assert_problem(client.get("/v1/nowhere", headers=PLANNER), 404)
    assert_problem(client.get("/v1/sensors/999999", headers=PLANNER), 404)
    assert_problem(client.get("/v1/models/nope/lineage", headers=auditor), 404)
    assert_problem(client.get(f"/v1/models/{version}/lineage", headers=PLANNER), 403)
    assert_problem(client.get("/v1/network/history?hours=nan", headers=PLANNER), 422)
    assert_problem(client.get("/v1/sensors/a%20b", headers=PLANNER), 422)
    not_ready = assert_problem(client.get(f"/v1/forecasts/{SENSOR}", headers=PLANNER), 503)
    assert not_ready["detail"]
    with TestClient(make_app(model_registry, rate_limit="1/minute")) as limited:
        limited.get("/v1/sensors", headers=PLANNER)
        assert_problem(limited.get("/v1/sensors", headers=PLANNER), 429)


def test_openapi_documents_every_error_as_a_problem(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert {"type", "title", "status", "detail", "instance"} <= set(
        schema["components"]["schemas"]["Problem"]["properties"]
    )
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            for status, answer in errors.items():
                assert list(answer["content"]) == ["application/problem+json"], (path, status)
            if "requestBody" in operation:
                assert {"400", "401", "413", "415", "422"} <= set(errors), (path, method)
            if "security" in operation:
                assert {"401", "429"} <= set(errors), (path, method)


# --- credentials in logs, private files ---------------------------------------------------


class OfflineApi(ApiServer):
    """The API process without Kafka (no live feed, so never ready; started once healthy)."""

    def log_text(self) -> str:
        assert self.log is not None
        return self.log.read_text()

    def rss_kib(self) -> int:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
        )


@pytest.fixture(scope="module")
def offline_api(
    model_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OfflineApi]:
    env = {
        "TRAFFIC_API_MODEL_DIR": str(model_registry),
        "TRAFFIC_API_LIVE": "false",
        "TRAFFIC_API_PUBLISH": "false",
        "TRAFFIC_API_JWT_SECRET": JWT_SECRET,
        "TRAFFIC_API_AUDIT_ENABLED": "false",
        "TRAFFIC_API_AUTH_FAILURE_LIMIT": "",
        "TRAFFIC_API_MAX_BODY_BYTES": str(LIMIT),
    }
    server = OfflineApi(env, ready_path="/v1/health")
    server.start(tmp_path_factory.mktemp("offline-api"))
    yield server
    server.stop()


@pytest.mark.integration
def test_websocket_handshake_lines_hold_no_token(offline_api: OfflineApi) -> None:
    """uvicorn logs each handshake with its query string; the token in it is redacted, also
    when its name is percent-encoded (the server decodes names before use)."""
    secret = token()
    base = offline_api.url.replace("http", "ws", 1)
    with connect(f"{base}/v1/stream/ws?access_token={secret}&x=1", open_timeout=10) as ws:
        ws.close()
    with connect(f"{base}/v1/stream/ws?access%5Ftoken={secret}", open_timeout=10) as ws:
        ws.close()
    deadline = time.monotonic() + 10
    while offline_api.log_text().count("[accepted]") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the log writer thread flushes every 0.1 s
    log = offline_api.log_text()
    assert log.count("[accepted]") == 2, log
    assert all(json.loads(line) for line in log.splitlines()), "every line is a JSON record"
    assert secret not in log and secret.split(".")[2] not in log
    assert "/v1/stream/ws?access_token=REDACTED&x=1" in log
    assert "/v1/stream/ws?access%5Ftoken=REDACTED" in log


TOKEN_TEXT = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=12
)


@st.composite
def encoded(draw: st.DrawFn, name: str) -> str:
    """`name` with some of its characters percent-encoded, as a client may send it."""
    return "".join(f"%{ord(c):02X}" if draw(st.booleans()) else c for c in name)


@FUZZ
@given(
    secret=TOKEN_TEXT,
    name=st.sampled_from(["access_token", "token", "api_key", "password"]).flatmap(encoded),
    before=st.sampled_from(["", "x=1&", "a=%20&"]),
)
def test_redaction_finds_credentials_however_named(secret: str, name: str, before: str) -> None:
    line = f'127.0.0.1:5 - "WebSocket /v1/stream/ws?{before}{name}={secret}" [accepted]'
    for text in (line, json.dumps({"message": line})):
        clean = redact(text)
        assert secret not in clean
        assert f"?{before}{name}={REDACTED}" in clean
    json.loads(redact(json.dumps({"message": line})))


def raw_post(url: str, headers: dict[str, str], declared: int) -> tuple[bytes, int]:
    """POST a body of `declared` bytes over a bare socket: send its first 64 KiB, read the
    answer's status line, then keep sending the rest until the server stops taking it.
    Returns the status line and how many body bytes the server let through in all."""
    host, port = url.removeprefix("http://").split(":")
    lines = ["POST /v1/forecasts HTTP/1.1", f"Host: {host}", f"Content-Length: {declared}"]
    lines += [f"{name}: {value}" for name, value in (headers | JSON).items()]
    chunk = b" " * 65536
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + chunk)
        status = sock.recv(200).split(b"\r\n", 1)[0]
        written = len(chunk)
        try:
            while written < declared:  # a send blocked for 10 s: nobody reads any more
                written += sock.send(chunk)
        except OSError:  # reset, broken pipe or that timeout: the server stopped reading
            pass
    return status, written


@pytest.mark.integration
def test_large_bodies_are_neither_read_nor_kept(offline_api: OfflineApi) -> None:
    """Declared 52 MB bodies, authenticated or not, are refused before they are read and
    the connection is closed, so a client gets only a few MB out of the 52 and the
    process's memory stays flat (the API grew ~350 MB from eight such bodies when they
    were parsed before authentication)."""
    before = offline_api.rss_kib()
    for headers in ({}, PLANNER):
        for _ in range(4):
            status, written = raw_post(offline_api.url, headers, 52_000_000)
            assert status.split()[1] == (b"413" if headers else b"401"), status
            assert written < 20_000_000, f"the server took {written} bytes of a refused body"
    growth_mb = (offline_api.rss_kib() - before) / 1024
    assert growth_mb < 20, f"API grew {growth_mb:.0f} MB"


def test_log_and_secret_files_are_private(tmp_path: Path) -> None:
    from infra.stack.local import LocalStack
    from infra.stack.process import ManagedProcess
    from infra.stack.serving import jwt_secret, token_file

    stack = LocalStack.from_env(tmp_path)
    (stack.api.state_dir).mkdir(parents=True)
    old = stack.api.state_dir / "jwt-secret"
    old.write_text("s" * 48)
    old.chmod(0o644)  # a secret from before this fix is narrowed on next use
    assert jwt_secret(stack) == "s" * 48
    process = ManagedProcess("probe", tmp_path / "p.pid", tmp_path / "logs" / "p.log", "probe")
    process.spawn(["sh", "-c", "echo probe; echo data > made-by-service"], cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not (tmp_path / "made-by-service").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    files = [
        old,
        token_file(stack, "demo-planner", ("planner",)),
        process.log_file,
        process.pid_file,
        tmp_path / "made-by-service",
    ]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}
    assert modes == {path.name: 0o600 for path in files}


@pytest.mark.integration
def test_starting_postgres_prints_no_password(
    postgres_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    from infra.stack.__main__ import start
    from infra.stack.local import LocalStack

    stack = LocalStack.from_env(tmp_path)
    password = "pw-" + "q" * 20
    stack = replace(stack, postgres=replace(postgres_server, password=password))
    start(stack, ["postgres"])  # already running: says where it is
    printed = capsys.readouterr().out
    assert f"postgresql://{postgres_server.username}:***@" in printed
    assert password not in printed


def test_the_demo_names_token_files_instead_of_printing_tokens(tmp_path: Path) -> None:
    from infra.stack.__main__ import example_calls
    from infra.stack.local import LocalStack

    printed = example_calls(LocalStack.from_env(tmp_path))
    assert "eyJ" not in printed
    line = next(x for x in printed.splitlines() if "export TOKEN=" in x)
    token_path = Path(line.split("$(cat ", 1)[1].rstrip(")"))
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert token_path.read_text().startswith("eyJ")


def test_failed_setup_commands_do_not_echo_their_secrets() -> None:
    from infra.stack.process import ServiceError, run_checked

    with pytest.raises(ServiceError) as failed:
        run_checked(["sh", "-c", "echo ERROR near pw-4711 >&2; exit 3"], "psql", redact=["pw-4711"])
    assert "pw-4711" not in str(failed.value) and "ERROR near ***" in str(failed.value)


def test_an_unexpected_failure_is_a_500_problem_without_internals(model_registry: Path) -> None:
    app = make_app(model_registry)
    with TestClient(app, raise_server_exceptions=False) as crashing:

        def broken() -> dict:
            raise RuntimeError("secret internals: /etc/passwd")

        app.state.service.network_status = broken
        answer = crashing.get("/v1/network/status", headers=PLANNER)
    body = assert_problem(answer, 500)
    assert "internals" not in answer.text and "X-Request-ID" in body["detail"]
    assert answer.headers["x-request-id"]
