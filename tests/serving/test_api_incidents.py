"""Incidents and weather through the real API process and the real broker: an incident
produced on the API's incidents topic is listed by GET /v1/incidents and flags the forecasts
of a sensor upstream of it (in its queue); its end report moves it to the recent ones and
clears the flag; a bad record before it is counted and skipped; weather is served, labelled
synthetic. The API's clock is the replayed readings' (6 March 2012, up to 08:00)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from api_fixtures import ApiServer
from context_helpers import incident_report, produce, until

from traffic_core.datasets import load_metr_la_graph
from traffic_core.events import WEATHER, EventCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

END = datetime(2012, 3, 6, 7, 50, tzinfo=UTC)
"""Before the API's clock (the end of the last replayed window, 08:00)."""


def test_an_incident_is_listed_flags_upstream_forecasts_and_ends(
    api_server: ApiServer, shared_data: Any
) -> None:
    graph = load_metr_la_graph(shared_data / "metr-la")
    at = next(s for s in graph.sensor_ids if graph.upstream(s))
    upstream = graph.upstream(at)[0]
    topic = api_server.env["TRAFFIC_API_INCIDENTS_TOPIC"]
    headers = api_server.headers()
    produce(api_server, topic, [b"not an incident", incident_report(at, None)])

    def listing(**params: str) -> dict:
        answer = httpx.get(f"{api_server.url}/v1/incidents", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    body = until(listing, lambda b: bool(b["incidents"]))
    (incident,) = body["incidents"]
    assert incident["incident_id"] == "SYN-INC-TEST" and incident["status"] == "active"
    assert incident["is_synthetic"] and body["synthetic"]
    assert incident["reach"][at] == 0 and incident["reach"][upstream] > 0  # in its queue
    assert body["as_of"] == "2012-03-06T08:00:00Z"

    def flags() -> list[dict]:
        answer = httpx.get(f"{api_server.url}/v1/forecasts/{upstream}", headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["incidents"]

    (flag,) = until(flags, bool)
    assert flag["incident_id"] == "SYN-INC-TEST" and flag["sensor_id"] == at
    assert flag["hops"] == incident["reach"][upstream] and flag["is_synthetic"]
    far = next(s for s in graph.sensor_ids if s not in incident["reach"])
    batch = httpx.get(
        f"{api_server.url}/v1/forecasts", params={"sensor_id": [upstream, far]}, headers=headers
    ).json()
    assert [bool(f["incidents"]) for f in batch["forecasts"]] == [True, False]
    assert listing(sensor_id=far)["incidents"] == []

    produce(api_server, topic, [incident_report(at, END)])
    body = until(listing, lambda b: b["incidents"][0]["status"] != "active")
    assert body["incidents"][0]["status"] == "ended"
    assert body["incidents"][0]["end_time"] == "2012-03-06T07:50:00Z"
    assert listing(status="active")["incidents"] == []
    assert [i["incident_id"] for i in listing(status="recent")["incidents"]] == ["SYN-INC-TEST"]
    assert until(flags, lambda f: not f) == []

    metrics = httpx.get(f"{api_server.url}/metrics").text
    assert f'api_context_rejected_total{{reason="UNDECODABLE",topic="{topic}"}} 1.0' in metrics


def test_weather_is_served_with_its_age_and_labelled_synthetic(api_server: ApiServer) -> None:
    observation = {
        "station_id": "KCQT",
        "observed_at": datetime(2012, 3, 6, 7, 0, tzinfo=UTC),
        "precipitation_mm": 2.5,
        "visibility_km": 4.0,
        "source": "synthetic",
        "is_synthetic": True,
    }
    produce(
        api_server,
        api_server.env["TRAFFIC_API_WEATHER_TOPIC"],
        [EventCodec(WEATHER).encode(observation)],
    )

    def weather() -> dict:
        answer = httpx.get(f"{api_server.url}/v1/weather", headers=api_server.headers())
        assert answer.status_code == 200, answer.text
        return answer.json()

    body = until(weather, lambda b: bool(b["observations"]))
    (seen,) = body["observations"]
    assert seen["station_id"] == "KCQT" and seen["precipitation_mm"] == 2.5
    assert seen["temperature_c"] is None and seen["age_minutes"] == 60.0
    assert seen["is_synthetic"] and body["synthetic"]


def test_unknown_sensor_filter_is_a_problem(api_server: ApiServer) -> None:
    answer = httpx.get(
        f"{api_server.url}/v1/incidents",
        params={"sensor_id": "nowhere"},
        headers=api_server.headers(),
    )
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
