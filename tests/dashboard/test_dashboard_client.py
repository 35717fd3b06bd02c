"""The dashboard's API client: HTTP failures become the error a page can explain."""

from __future__ import annotations

import httpx
import pytest

from dashboard.client import (
    ApiUnreachable,
    Forbidden,
    NotAuthenticated,
    NotFound,
    NotReady,
    RateLimited,
    TrafficApi,
    UnexpectedAnswer,
    error_for,
)
from dashboard.config import DashboardConfig
from dashboard.states import notice_for
from serving.schemas import SensorInfo

SENSOR = {
    "sensor_id": "773869",
    "latitude": 34.15,
    "longitude": -118.31,
    "upstream": ["767541"],
    "downstream": [],
}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, NotAuthenticated),
        (403, Forbidden),
        (404, NotFound),
        (429, RateLimited),
        (503, NotReady),
        (422, UnexpectedAnswer),
        (500, UnexpectedAnswer),
    ],
)
def test_each_status_maps_to_its_error_with_the_api_detail(status: int, error: type) -> None:
    raised = error_for(status, {"detail": "why"})
    assert type(raised) is error
    assert (raised.status, raised.detail) == (status, "why")


def test_details_without_the_usual_shape_still_read_well() -> None:
    assert error_for(503, {"ready": False, "reason": "no model"}).detail == "no model"
    validation = [{"loc": ["query", "hours"], "msg": "less than or equal to 48"}]
    assert error_for(422, {"detail": validation}).detail == "less than or equal to 48"
    assert error_for(502, None).detail == "HTTP 502"


def api_answering(handler) -> TrafficApi:
    return TrafficApi(
        "http://api.test",
        "planner-token",
        audit_token="auditor-token",
        transport=httpx.MockTransport(handler),
        cache=False,
    )


def test_answers_are_typed_and_carry_the_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[SENSOR])

    assert api_answering(handler).sensors() == [SensorInfo(**SENSOR)]
    assert seen[0].url.path == "/v1/sensors"
    assert seen[0].headers["Authorization"] == "Bearer planner-token"


def test_lineage_goes_with_the_audit_token() -> None:
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["Authorization"])
        return httpx.Response(403, json={"detail": "needs auditor"})

    with pytest.raises(Forbidden, match="needs auditor"):
        api_answering(handler).lineage("v1")
    assert tokens == ["Bearer auditor-token"]


def test_no_server_is_unreachable_and_a_foreign_shape_is_unexpected() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ApiUnreachable, match="refused"):
        api_answering(refused).network_status()
    with pytest.raises(UnexpectedAnswer, match="outside the API contract"):
        api_answering(lambda r: httpx.Response(200, json={"points": "?"})).network_history(6)
    with pytest.raises(UnexpectedAnswer, match="did not answer JSON"):
        api_answering(lambda r: httpx.Response(200, text="<html>")).sensors()


def test_not_ready_is_an_answer_of_the_readiness_probe() -> None:
    body = {"ready": False, "model": None, "reason": "no model registered yet"}
    readiness = api_answering(lambda r: httpx.Response(503, json=body)).readiness()
    assert (readiness.ready, readiness.reason) == (False, "no model registered yet")


def test_query_parameters_follow_the_contract() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"alerts": []})

    api_answering(handler).alerts(sensor_id="773869", kind="raised", limit=50)
    assert dict(seen[0].url.params) == {"sensor_id": "773869", "kind": "raised", "limit": "50"}


def test_notices_say_what_to_do() -> None:
    config = DashboardConfig(api_url="http://api.test:8000")
    down = notice_for(ApiUnreachable("ConnectError: refused"), config)
    assert down.level == "error"
    assert "http://api.test:8000 is not reachable" in down.text
    assert "make demo" in down.text
    not_ready = notice_for(NotReady("no model registered yet", 503), config)
    assert not_ready.level == "warning"
    assert "No forecasts yet: no model registered yet" in not_ready.text
    assert "TRAFFIC_DASHBOARD_TOKEN" in notice_for(NotAuthenticated("expired", 401), config).text
    crash = notice_for(KeyError("x"), config)
    assert crash.level == "error" and "Traceback" not in crash.text


def test_configuration_comes_from_the_environment(tmp_path) -> None:
    config = DashboardConfig.from_env(
        {
            "TRAFFIC_API_URL": "http://api:8000/",
            "TRAFFIC_DASHBOARD_TOKEN": "t",
            "TRAFFIC_LAKE_DIR": str(tmp_path),
            "TRAFFIC_DASHBOARD_REFRESH_SECONDS": "1",
        }
    )
    assert config.api_url == "http://api:8000"
    assert (config.token, config.audit_token, config.tiles) == ("t", None, None)
    assert config.lake_dir == tmp_path
    assert config.refresh_seconds == 5
    assert (
        DashboardConfig.from_env({"TRAFFIC_DASHBOARD_REFRESH_SECONDS": "3O"}).refresh_seconds == 30
    )
