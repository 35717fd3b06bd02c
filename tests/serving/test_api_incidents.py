"""Incidents and weather through the real API process and the real broker: an incident
produced on the API's incidents topic is listed by GET /v1/incidents and flags the forecasts
of a sensor upstream of it (in its queue); its end report moves it to the recent ones and
clears the flag; a bad record before it is counted and skipped; weather is served, labelled
synthetic. The API's clock is the replayed readings' (6 March 2012, up to 08:00)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from api_fixtures import ApiServer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from traffic_core.datasets import load_metr_la_graph
from traffic_core.events import INCIDENT, WEATHER, EventCodec
from traffic_core.kafka.topics import TopicSpec, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2012, 3, 6, 7, 30, tzinfo=UTC)
END = datetime(2012, 3, 6, 7, 50, tzinfo=UTC)
"""Both before the API's clock (the end of the last replayed window, 08:00)."""


def _produce(server: ApiServer, topic: str, values: list[bytes]) -> None:
    admin = AdminClient({"bootstrap.servers": server.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(topic, 1)])
    producer = Producer({"bootstrap.servers": server.bootstrap_servers})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0


def _until(read: Callable[[], Any], accept: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    """Poll an answer until it shows what the test waits for (the API applies Kafka records
    asynchronously); the last answer is returned either way, for the assertion."""
    deadline = time.monotonic() + timeout
    answer = read()
    while not accept(answer) and time.monotonic() < deadline:
        time.sleep(0.3)
        answer = read()
    return answer


def _incident(sensor_id: str, end: datetime | None) -> bytes:
    return EventCodec(INCIDENT).encode(
        {
            "incident_id": "SYN-INC-TEST",
            "sensor_id": sensor_id,
            "start_time": START,
            "end_time": end,
            "severity": "MAJOR",
            "affected_sensors": [sensor_id],
            "source": "synthetic",
            "is_synthetic": True,
        }
    )


def test_an_incident_is_listed_flags_upstream_forecasts_and_ends(
    api_server: ApiServer, shared_data: Any
) -> None:
    graph = load_metr_la_graph(shared_data / "metr-la")
    at = next(s for s in graph.sensor_ids if graph.upstream(s))
    upstream = graph.upstream(at)[0]
    topic = api_server.env["TRAFFIC_API_INCIDENTS_TOPIC"]
    headers = api_server.headers()
    _produce(api_server, topic, [b"\x00garbage", _incident(at, None)])

    def listing(**params: str) -> dict:
        answer = httpx.get(f"{api_server.url}/v1/incidents", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    body = _until(listing, lambda b: bool(b["incidents"]))
    (incident,) = body["incidents"]
    assert incident["incident_id"] == "SYN-INC-TEST" and incident["status"] == "active"
    assert incident["is_synthetic"] and body["synthetic"]
    assert incident["reach"][at] == 0 and incident["reach"][upstream] > 0  # in its queue
    assert body["as_of"] == "2012-03-06T08:00:00Z"

    def flags() -> list[dict]:
        answer = httpx.get(f"{api_server.url}/v1/forecasts/{upstream}", headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["incidents"]

    (flag,) = _until(flags, bool)
    assert flag["incident_id"] == "SYN-INC-TEST" and flag["sensor_id"] == at
    assert flag["hops"] == incident["reach"][upstream] and flag["is_synthetic"]
    far = next(s for s in graph.sensor_ids if s not in incident["reach"])
    batch = httpx.get(
        f"{api_server.url}/v1/forecasts", params={"sensor_id": [upstream, far]}, headers=headers
    ).json()
    assert [bool(f["incidents"]) for f in batch["forecasts"]] == [True, False]
    assert listing(sensor_id=far)["incidents"] == []

    _produce(api_server, topic, [_incident(at, END)])
    body = _until(listing, lambda b: b["incidents"][0]["status"] != "active")
    assert body["incidents"][0]["status"] == "ended"
    assert body["incidents"][0]["end_time"] == "2012-03-06T07:50:00Z"
    assert listing(status="active")["incidents"] == []
    assert [i["incident_id"] for i in listing(status="recent")["incidents"]] == ["SYN-INC-TEST"]
    assert _until(flags, lambda f: not f) == []

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
    _produce(
        api_server,
        api_server.env["TRAFFIC_API_WEATHER_TOPIC"],
        [EventCodec(WEATHER).encode(observation)],
    )

    def weather() -> dict:
        answer = httpx.get(f"{api_server.url}/v1/weather", headers=api_server.headers())
        assert answer.status_code == 200, answer.text
        return answer.json()

    body = _until(weather, lambda b: bool(b["observations"]))
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
