"""The one-sensor fast path answers exactly as the FastAPI route it shortcuts.

Two apps over one service and one real snapshot (ridge on 1-5 March, forecasts at 6 March
08:00): one as deployed, one without `OneSensorFastPath`. Every case (allowed roles, no, bad
and expired tokens, a role outside the route's, API keys, unknown and malformed ids, no
forecasts yet, the rate limit) must get the same status, body and headers from both, and the
fast path's requests must reach the audit log and the metrics under the route's template.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from api_fixtures import real_speeds
from fastapi.testclient import TestClient

from serving.app import build_service, create_app
from serving.forecasting import forecast_all
from serving.route_table import api_routes
from serving.routes.forecasts import OneSensorFastPath
from serving.security import Role, SecuritySettings, issue_token
from serving.service import ForecastService
from serving.settings import ApiSettings

SECRET = "fast-path-secret-" + "f" * 40
SERVICE_KEY = "fast-path-service-key-0123456789"
SENSOR = "773869"
HEADERS_COMPARED = ("content-type", "content-length", "www-authenticate", "retry-after")


def _settings(tmp: Path, name: str, rate_limit: str) -> SecuritySettings:
    return SecuritySettings(
        jwt_secret=SECRET,
        api_keys=f"svc:{SERVICE_KEY}:service",
        rate_limit=rate_limit,
        auth_failure_limit="",
        audit_url=f"sqlite:///{tmp / f'{name}.sqlite3'}",
    )


@contextmanager
def _clients(
    svc: ForecastService, api: ApiSettings, tmp: Path, rate_limit: str = "1000/second"
) -> Iterator[tuple[TestClient, TestClient]]:
    """The app as deployed and the same app without the fast path, both serving `svc`."""
    fast = create_app(api, _settings(tmp, "fast", rate_limit))
    plain = create_app(api, _settings(tmp, "plain", rate_limit))
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not OneSensorFastPath]
    assert len(plain.user_middleware) == len(fast.user_middleware) - 1
    with TestClient(fast) as fast_client, TestClient(plain) as plain_client:
        for app in (fast, plain):
            app.state.service = svc  # in place of the one the lifespan built
        yield fast_client, plain_client


@pytest.fixture(scope="module")
def served(
    model_registry: Path, shared_data: Path
) -> Iterator[tuple[ForecastService, ApiSettings]]:
    api = ApiSettings(live=False, publish=False, model_dir=model_registry)
    svc = build_service(api)
    svc.holder.start()
    try:
        speeds = real_speeds(shared_data).loc[: pd.Timestamp("2012-03-06 08:00")]
        svc._latest = forecast_all(svc.holder.current, speeds, speeds.index[-1], synthetic=False)
        yield svc, api
    finally:
        svc.holder.stop()


SESSION_TTL = 4 * 3600
"""Tokens are made at collection: valid for however long the session runs before this module."""


def _token(roles: list[Role], ttl: int = SESSION_TTL) -> str:
    return issue_token("fast-path-test", roles, SecuritySettings(jwt_secret=SECRET), ttl=ttl)


CASES = {
    "planner": ({"Authorization": f"Bearer {_token([Role.PLANNER])}"}, SENSOR),
    "auditor": ({"Authorization": f"Bearer {_token([Role.AUDITOR])}"}, SENSOR),
    "service key": ({"X-API-Key": SERVICE_KEY}, SENSOR),
    "no roles": ({"Authorization": f"Bearer {_token([])}"}, SENSOR),
    "no token": ({}, SENSOR),
    "bad token": ({"Authorization": "Bearer not.a.token"}, SENSOR),
    "expired": ({"Authorization": f"Bearer {_token([Role.PLANNER], ttl=-3600)}"}, SENSOR),
    "wrong key": ({"X-API-Key": "nope-" + "x" * 30}, SENSOR),
    "both": (
        {"Authorization": f"Bearer {_token([Role.PLANNER])}", "X-API-Key": SERVICE_KEY},
        SENSOR,
    ),
    "unknown sensor": ({"Authorization": f"Bearer {_token([Role.PLANNER])}"}, "999999"),
    "malformed id": ({"Authorization": f"Bearer {_token([Role.PLANNER])}"}, "a%20b"),
    "too long id": ({"Authorization": f"Bearer {_token([Role.PLANNER])}"}, "7" * 65),
    "browser": (
        {"Authorization": f"Bearer {_token([Role.PLANNER])}", "Origin": "http://127.0.0.1:8501"},
        SENSOR,
    ),
}


def _answer(client: TestClient, headers: dict[str, str], sensor: str) -> tuple:
    response = client.get(f"/v1/forecasts/{sensor}", headers=headers)
    kept = {name: response.headers.get(name) for name in HEADERS_COMPARED}
    cors = {k: v for k, v in response.headers.items() if k.startswith("access-control")}
    return response.status_code, response.content, kept, cors


def test_every_case_is_answered_as_the_route_answers_it(
    served: tuple[ForecastService, ApiSettings], tmp_path: Path
) -> None:
    svc, api = served
    with _clients(svc, api, tmp_path) as (fast_client, plain_client):
        for name, (headers, sensor) in CASES.items():
            got, expected = (
                _answer(fast_client, headers, sensor),
                _answer(plain_client, headers, sensor),
            )
            assert got == expected, name
        statuses = {name: _answer(fast_client, h, s)[0] for name, (h, s) in CASES.items()}
    assert statuses["planner"] == statuses["service key"] == statuses["browser"] == 200
    assert statuses["no roles"] == 403 and statuses["no token"] == 401
    assert statuses["unknown sensor"] == 404 and statuses["malformed id"] == 422


def test_not_ready_goes_to_the_route(
    served: tuple[ForecastService, ApiSettings], tmp_path: Path
) -> None:
    svc, api = served
    latest, svc._latest = svc._latest, None
    try:
        headers, sensor = CASES["planner"]
        with _clients(svc, api, tmp_path) as (a, b):
            assert _answer(a, headers, sensor) == _answer(b, headers, sensor)
            assert a.get(f"/v1/forecasts/{sensor}", headers=headers).status_code == 503
    finally:
        svc._latest = latest


def test_rate_limit_answers_429_with_retry_after(
    served: tuple[ForecastService, ApiSettings], tmp_path: Path
) -> None:
    svc, api = served
    headers, sensor = CASES["planner"]
    with _clients(svc, api, tmp_path, rate_limit="3/minute") as (client, _):
        statuses = [client.get(f"/v1/forecasts/{sensor}", headers=headers) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert int(statuses[-1].headers["retry-after"]) >= 1


def test_fast_path_requests_are_audited_and_measured(
    served: tuple[ForecastService, ApiSettings], tmp_path: Path
) -> None:
    svc, api = served
    headers, sensor = CASES["planner"]
    with _clients(svc, api, tmp_path) as (client, _):
        assert client.get(f"/v1/forecasts/{sensor}", headers=headers).status_code == 200
        assert client.get(f"/v1/forecasts/{sensor}").status_code == 401
        metrics = client.get("/metrics", headers=headers).text
    with sqlite3.connect(tmp_path / "fast.sqlite3") as db:
        rows = db.execute(
            "SELECT subject, status, path FROM api_audit_log WHERE path LIKE '/v1/forecasts/%' "
            "ORDER BY id"
        ).fetchall()
    assert rows == [
        ("fast-path-test", 200, f"/v1/forecasts/{sensor}"),
        (None, 401, f"/v1/forecasts/{sensor}"),
    ]
    assert 'route="/v1/forecasts/{sensor_id}"' in metrics


def test_the_fast_path_is_what_answers(
    served: tuple[ForecastService, ApiSettings], tmp_path: Path
) -> None:
    """With the route itself gone, valid reads still get their forecast (so the comparisons
    above did compare the fast path with the route), while invalid ones find no route."""
    svc, api = served
    app = create_app(api, _settings(tmp_path, "only-fast", "1000/second"))
    app.router.routes = [
        r.original_route for r in api_routes(app) if r.path != "/v1/forecasts/{sensor_id}"
    ]
    headers, sensor = CASES["planner"]
    with TestClient(app) as client:
        app.state.service = svc
        served_by_fast_path = client.get(f"/v1/forecasts/{sensor}", headers=headers)
        unknown = client.get("/v1/forecasts/999999", headers=headers)
    assert served_by_fast_path.status_code == 200
    assert served_by_fast_path.content == svc.snapshot().one_json(sensor)
    assert unknown.status_code == 404 and "Not Found" in unknown.text
