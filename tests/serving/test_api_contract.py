"""The API's contract: who may call what (every route x every role, no token, a bad token),
rate limiting, and property-based fuzzing of every operation in the OpenAPI schema against the
running service (real model, real broker): no input may produce a 5xx, and input the schema
refuses (schemathesis' negative mode) gets a 4xx problem, never a 500."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from api_fixtures import JWT_SECRET, ROLES, ApiServer
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from serving.app import create_app
from serving.route_table import api_routes, websocket_paths
from serving.security import SecuritySettings, issue_token
from serving.settings import ApiSettings

SENSOR = "773869"
EVERYONE = set(ROLES)
OWN_DATA = {"planner", "operator", "service"}
STREAMERS = {"planner", "operator", "service"}
MATRIX: dict[tuple[str, str], set[str]] = {
    ("GET", "/v1/forecasts/{sensor_id}"): EVERYONE,
    ("GET", "/v1/forecasts"): EVERYONE,
    ("POST", "/v1/forecasts"): OWN_DATA,
    ("GET", "/v1/sensors"): EVERYONE,
    ("GET", "/v1/sensors/{sensor_id}"): EVERYONE,
    ("GET", "/v1/sensors/{sensor_id}/history"): EVERYONE,
    ("GET", "/v1/network/status"): EVERYONE,
    ("GET", "/v1/network/history"): EVERYONE,
    ("GET", "/v1/alerts"): EVERYONE,
    ("GET", "/v1/incidents"): EVERYONE,
    ("GET", "/v1/weather"): EVERYONE,
    ("GET", "/v1/models"): EVERYONE,
    ("GET", "/v1/models/current"): EVERYONE,
    ("GET", "/v1/models/{version}/lineage"): {"auditor", "operator"},
    ("POST", "/v1/admin/reload-model"): {"operator"},
    ("GET", "/v1/stream/sse"): STREAMERS,
    ("WS", "/v1/stream/ws"): STREAMERS,
}
"""Expected access per route; a route missing here fails the completeness test."""
OPEN = {
    "/v1/health",
    "/v1/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}


@pytest.fixture(scope="module")
def client(model_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app in-process with the real model and no live feed: access control is decided
    before any handler runs, so this is enough for the matrix."""
    audit = tmp_path_factory.mktemp("audit") / "audit.db"
    app = create_app(
        ApiSettings(model_dir=model_registry, live=False, publish=False),
        SecuritySettings(
            jwt_secret=JWT_SECRET, rate_limit="100000/second", audit_url=f"sqlite:///{audit}"
        ),
    )
    with TestClient(app) as test_client:
        yield test_client


def _token(role: str, subject: str = "matrix") -> str:
    return issue_token(subject, [role], SecuritySettings(jwt_secret=JWT_SECRET), ttl=600)


def _concrete(path: str, client: TestClient) -> str:
    version = client.app.state.service.holder.registry.latest()
    return path.replace("{sensor_id}", SENSOR).replace("{version}", version)


def test_every_route_is_in_the_matrix(client: TestClient) -> None:
    routes = {("WS", path) for path in websocket_paths(client.app)}
    for route in api_routes(client.app):
        routes |= {(m, route.path) for m in route.methods if m != "HEAD"}
    guarded = {r for r in routes if r[1] not in OPEN}
    assert guarded == set(MATRIX)


@pytest.mark.parametrize("route", [r for r in MATRIX if r[0] != "WS"], ids=" ".join)
@pytest.mark.parametrize("who", [*ROLES, "no token", "bad token"])
def test_role_matrix(client: TestClient, route: tuple[str, str], who: str) -> None:
    method, path = route
    headers = {}
    if who == "bad token":
        headers["Authorization"] = "Bearer " + _token("operator")[:-4] + "AAAA"
    elif who != "no token":
        headers["Authorization"] = f"Bearer {_token(who)}"
    url = _concrete(path, client)
    if path == "/v1/stream/sse" and who in STREAMERS:
        pytest.skip("an admitted SSE request streams forever; tested over HTTP in test_api")
    body = {"readings": [{"sensor_id": SENSOR, "timestamp": "2012-03-06T08:00", "speed_mph": 60}]}
    answer = client.request(method, url, headers=headers, json=body if method == "POST" else None)
    if who in ("no token", "bad token"):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    elif who in MATRIX[route]:
        assert answer.status_code not in (401, 403), answer.text
        assert answer.status_code < 500 or answer.status_code == 503  # 503: no live data
    else:
        assert answer.status_code == 403
        assert "requires one of the roles" in answer.json()["detail"]


@pytest.mark.parametrize("who", [*ROLES, "no token"])
def test_websocket_roles(client: TestClient, who: str) -> None:
    from starlette.websockets import WebSocketDisconnect

    query = "" if who == "no token" else f"?access_token={_token(who)}"
    if who in STREAMERS:
        with client.websocket_connect(f"/v1/stream/ws{query}") as socket:
            socket.close()
        return
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(f"/v1/stream/ws{query}") as socket,
    ):
        socket.receive_text()
    assert refused.value.code == 1008


def test_api_key_admits_a_service(model_registry: Path) -> None:
    app = create_app(
        ApiSettings(model_dir=model_registry, live=False, publish=False),
        SecuritySettings(
            jwt_secret=JWT_SECRET,
            api_keys="billing:k-0123456789abcdef:service",
            audit_enabled=False,
        ),
    )
    with TestClient(app) as c:
        assert c.get("/v1/sensors", headers={"X-API-Key": "k-0123456789abcdef"}).status_code == 200
        assert c.get("/v1/sensors", headers={"X-API-Key": "k-wrong-wrong-wrong"}).status_code == 401
        lineage = c.get("/v1/models/x/lineage", headers={"X-API-Key": "k-0123456789abcdef"})
        assert lineage.status_code == 403


def test_rate_limit_answers_429_with_retry_after(model_registry: Path) -> None:
    app = create_app(
        ApiSettings(model_dir=model_registry, live=False, publish=False),
        SecuritySettings(jwt_secret=JWT_SECRET, rate_limit="5/minute", audit_enabled=False),
    )
    headers = {"Authorization": f"Bearer {_token('planner')}"}
    with TestClient(app) as c:
        codes = [c.get("/v1/sensors", headers=headers).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        limited = c.get("/v1/sensors", headers=headers)
        assert 0 < int(limited.headers["retry-after"]) <= 60
        other = {"Authorization": f"Bearer {_token('planner', subject='someone-else')}"}
        assert c.get("/v1/sensors", headers=other).status_code == 200
        assert c.get("/v1/health").status_code == 200  # never limited


@pytest.fixture(scope="module")
def live_schema(api_server: ApiServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("live_schema")
CASES: list[int] = []


@pytest.mark.integration
@schema.parametrize()
@settings(max_examples=110, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case: schemathesis.Case, api_server: ApiServer) -> None:
    CASES.append(1)
    case.call_and_validate(headers=api_server.headers("operator"), checks=[not_a_server_error])


@pytest.mark.integration
def test_fuzzing_ran_at_least_a_thousand_cases() -> None:
    assert sum(CASES) >= 1000, f"only {sum(CASES)} fuzz cases ran"


@pytest.fixture(scope="module")
def negative_schema(api_server: ApiServer) -> schemathesis.BaseSchema:
    """The same schema, generating only what it refuses: wrong types, out-of-range numbers,
    malformed ids, missing and extra fields, bodies of the wrong shape."""
    # our credentials are sent with every case; deterministic: the same cases every run
    generation = {"mode": "negative", "with-security-parameters": False, "deterministic": True}
    config = SchemathesisConfig.from_dict({"generation": generation})
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json", config=config)


def takes_no_input(ctx: Any) -> bool:
    """GET /v1/health, /v1/sensors and the like take nothing but the credential (tested
    above, as a matrix): there is nothing to get wrong."""
    raw = ctx.operation.definition.raw
    return not raw.get("parameters") and "requestBody" not in raw


negative = schemathesis.pytest.from_fixture("negative_schema").exclude(takes_no_input)
NEGATIVE_STATUSES: Counter[int] = Counter()


@pytest.mark.integration
@negative.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_refused_input_is_a_problem_never_a_server_error(
    case: schemathesis.Case, api_server: ApiServer
) -> None:
    answer = case.call(headers=api_server.headers("operator"))
    NEGATIVE_STATUSES[answer.status_code] += 1
    assert answer.status_code < 500, (case.as_curl_command(), answer.text)
    # uvicorn answers requests HTTP itself refuses (a control character in a header) with
    # a plain 400 before the app sees them; every answer of the app carries X-Request-ID.
    if answer.status_code >= 400 and "x-request-id" in answer.headers:
        assert answer.headers.get("content-type") == ["application/problem+json"], answer.text
        assert answer.json()["status"] == answer.status_code


@pytest.mark.integration
def test_negative_fuzzing_reached_validation() -> None:
    """Hundreds of refused inputs ran, most were answered 422, none 500."""
    assert sum(NEGATIVE_STATUSES.values()) >= 300, NEGATIVE_STATUSES
    assert NEGATIVE_STATUSES[422] >= 200, NEGATIVE_STATUSES
    assert 500 not in NEGATIVE_STATUSES, NEGATIVE_STATUSES


@pytest.mark.integration
def test_sse_streams_to_an_admitted_client(api_server: ApiServer) -> None:
    with httpx.stream(
        "GET", f"{api_server.url}/v1/stream/sse", headers=api_server.headers(), timeout=10
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")


def test_one_reading_is_too_little_history_and_says_so(client: TestClient) -> None:
    """Below the minimum input the answer is null with the reason, not a made-up speed."""
    readings = [
        {"sensor_id": SENSOR, "timestamp": f"2012-03-06T08:{m:02d}", "speed_mph": 60}
        for m in range(0, 60, 5)
    ]
    headers = {"Authorization": f"Bearer {_token('service')}"}
    for given, reason in ((readings[-1:], "insufficient_history"), (readings, None)):
        answer = client.post("/v1/forecasts", headers=headers, json={"readings": given})
        assert answer.status_code == 200, answer.text
        horizons = answer.json()["forecasts"][0]["horizons"]
        assert [h["reason"] for h in horizons] == [reason] * 3
        assert all((h["speed_mph"] is None) == (reason is not None) for h in horizons)
