"""Incident reports and weather observations reach their own topics, decodable and labelled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka.admin import AdminClient
from kafka_helpers import read_all, topic_message_count

from infra.stack.kafka import KafkaBroker
from traffic_core.events import INCIDENT, WEATHER, EventCodec
from traffic_core.ingestion.producer import (
    ReadingProducer,
    replay_incidents,
    replay_weather,
    severity_level,
)
from traffic_core.kafka.topics import (
    TRAFFIC_INCIDENTS,
    WEATHER_OBSERVATIONS,
    ensure_topics,
    topic_layout,
)
from traffic_core.simulation import simulate
from traffic_core.simulation.weather import simulate_weather

pytestmark = pytest.mark.integration


def test_incidents_and_weather_go_to_their_topics(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    ensure_topics(
        AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers}), topic_layout()
    )
    before = {
        t: topic_message_count(kafka_broker, t) for t in (TRAFFIC_INCIDENTS, WEATHER_OBSERVATIONS)
    }
    incidents = simulate(2, 207, seed=3).incidents
    assert len(incidents) > 0
    weather = tmp_path / "weather.csv"
    pd.DataFrame(
        {
            "station_id": ["KCQT", "KCQT"],
            "observed_at": ["2012-03-01T08:00:00Z", "2012-03-01T09:00:00Z"],
            "temperature_c": [14.5, None],
            "precipitation_mm": [0.0, 1.2],
        }
    ).to_csv(weather, index=False)

    simulated = tmp_path / "simulated.weather.csv"
    simulate_weather("2012-03-01", 1, seed=3).head(3).to_csv(simulated, index=False)

    sink = ReadingProducer(kafka_broker.bootstrap_servers)
    assert replay_incidents(incidents, sink) == len(incidents)
    assert replay_weather(weather, sink) == 2
    assert replay_weather(simulated, sink) == 3
    assert sink.flush() == 0

    sent_incidents = (
        topic_message_count(kafka_broker, TRAFFIC_INCIDENTS) - before[TRAFFIC_INCIDENTS]
    )
    assert sent_incidents == len(incidents)
    reports = [
        EventCodec(INCIDENT).decode(m.value())
        for m in read_all(
            kafka_broker, TRAFFIC_INCIDENTS, before[TRAFFIC_INCIDENTS] + len(incidents)
        )
    ][-len(incidents) :]
    assert all(r["is_synthetic"] and r["source"] == "synthetic" for r in reports)
    assert {r["incident_id"] for r in reports} == set(incidents["incident_id"])
    observations = [
        EventCodec(WEATHER).decode(m.value())
        for m in read_all(kafka_broker, WEATHER_OBSERVATIONS, before[WEATHER_OBSERVATIONS] + 5)
    ][-5:]
    assert observations[0]["temperature_c"] == 14.5 and observations[1]["temperature_c"] is None
    # a real CSV is real; the simulator's CSV says it is synthetic, and stays so
    assert [o["is_synthetic"] for o in observations] == [False, False, True, True, True]
    assert {o["source"] for o in observations[2:]} == {"synthetic"}


def test_severity_levels() -> None:
    assert [severity_level(s) for s in (0.1, 0.3, 0.6, 0.9)] == [
        "MINOR",
        "MODERATE",
        "MAJOR",
        "SEVERE",
    ]
