"""Incidents and weather -> lake through the real broker: the readings' writer and rules (exactly
once per daily partition, reruns rewrite identical files, rejects in the DLQ with their reason),
triggered by their own offset sensors, with their checks."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from dagster import AssetsDefinition, DagsterInstance, SensorDefinition, materialize
from ingest_helpers import run_sensor_tick, sensor_context
from kafka_helpers import read_all

from infra.stack.kafka import KafkaBroker
from resources import KafkaResource, LakeResource
from resources.network import NetworkResource
from sensors.kafka_offsets import incidents_offsets_sensor, weather_offsets_sensor
from traffic_assets.ingestion.context_assets import raw_traffic_incidents, raw_weather_observations
from traffic_assets.ingestion.context_checks import (
    incidents_dlq_rate,
    incidents_valid,
    weather_dlq_rate,
    weather_values_valid,
)
from traffic_assets.reference.sensor_graph import sensor_graph
from traffic_core.events import INCIDENT, WEATHER, EventCodec
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.lake import INCIDENTS, RawZone, raw_day_dirs, raw_files, read_raw_day
from traffic_core.lake import WEATHER as WEATHER_ZONE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY1 = datetime(2012, 3, 1, tzinfo=UTC)


def incident(n: int, start: datetime, **changes: object) -> dict[str, object]:
    return {
        "incident_id": f"SYN-INC-{n:06d}",
        "sensor_id": "773869",
        "start_time": start,
        "end_time": start + timedelta(minutes=45),
        "severity": "MAJOR",
        "affected_sensors": ["773869", "767541"],
        "source": "synthetic",
        "is_synthetic": True,
        **changes,
    }


def observation(hour: int, **changes: object) -> dict[str, object]:
    return {
        "station_id": "KLAX",
        "observed_at": DAY1 + timedelta(hours=hour),
        "temperature_c": 14.0,
        "precipitation_mm": 0.4 * (hour % 3),
        "visibility_km": 12.0,
        "source": "synthetic",
        "is_synthetic": True,
        **changes,
    }


def produce(broker: KafkaBroker, topic: str, values: list[tuple[bytes, datetime]]) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for value, stamp in values:
        producer.produce(topic, value, key=b"k", timestamp=int(stamp.timestamp() * 1000))
    assert producer.flush(30) == 0


def dlq_reasons(broker: KafkaBroker, dlq: str, expected: int) -> dict[int, str]:
    """Each rejected source offset's reason; every run of a day re-reads its whole range (three
    runs here), so each reject is sent once per run, always with the same reason."""
    seen: dict[int, set[str]] = {}
    for message in read_all(broker, dlq, expected):
        headers = {k: v.decode() for k, v in message.headers()}
        seen.setdefault(int(headers["dlq.source.offset"]), set()).add(headers["dlq.reason"])
    assert all(len(reasons) == 1 for reasons in seen.values())
    return {offset: reasons.pop() for offset, reasons in sorted(seen.items())}


def digests(lake: Path, zone: RawZone) -> dict[str, str]:
    return {
        str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in raw_files(lake, zone=zone)
    }


def ingest_and_check(
    instance: DagsterInstance,
    kafka: KafkaResource,
    lake: LakeResource,
    asset: AssetsDefinition,
    sensor: SensorDefinition,
    checks: list,
    zone: RawZone,
    rejected_share: float,
) -> list[str]:
    """A sensor tick and its runs, a quiet second tick, then each day rerun from the ledger
    with the asset's checks (rewriting the very same bytes); returns the days stored."""
    resources = {"kafka": kafka, "lake": lake, "network": NetworkResource()}
    assert materialize([sensor_graph], resources=resources, instance=instance).success
    cursor = run_sensor_tick(instance, kafka, lake, None, asset, sensor)
    quiet = sensor.evaluate_tick(sensor_context(instance, kafka, lake, cursor, asset, sensor))
    assert not quiet.run_requests and quiet.skip_message
    written = digests(lake.path(), zone)
    days = [d.isoformat() for d in sorted(raw_day_dirs(lake.path(), zone))]
    for day in days:
        result = materialize(
            [asset, *checks], partition_key=day, resources=resources, instance=instance
        )
        assert result.success
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert len(evaluations) == len(checks)
        values = evaluations.pop(next(iter(checks[0].check_specs)).name)
        assert values.passed, values.metadata
        # every run of a day reads the whole range: the rejects' share of it
        (dlq_rate,) = evaluations.values()
        assert dlq_rate.metadata["dlq_rate"].value == pytest.approx(rejected_share)
        assert dlq_rate.passed == (rejected_share <= 0.01)
    assert digests(lake.path(), zone) == written
    return days


@pytest.fixture
def kafka(kafka_broker: KafkaBroker) -> KafkaResource:
    """Fresh incident, weather and DLQ topics of one partition each."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"incidents-{suffix}", f"weather-{suffix}", f"dlq-{suffix}")
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(name, 1) for name in names])
    return KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        incidents_topic=names[0],
        weather_topic=names[1],
        dlq_topic=names[2],
    )


def test_incidents_land_once_per_start_date_and_rejects_go_to_dlq(
    kafka_broker: KafkaBroker, kafka: KafkaResource, tmp_path: Path
) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    codec = EventCodec(INCIDENT)
    good = [incident(n, DAY1 + timedelta(hours=7 * n)) for n in range(1, 6)]  # 2 dates
    # an update of incident 1 (its end known later) is a new report, kept as sent
    good.append({**good[0], "end_time": good[0]["start_time"] + timedelta(hours=2)})
    start = DAY1 + timedelta(hours=3)
    bad = {
        "UNDECODABLE": b"\x00\x00\x00\x00\x02\xff\xff",
        "OUT_OF_RANGE": codec.encode(incident(90, start, end_time=start - timedelta(hours=1))),
        "UNKNOWN_SENSOR": codec.encode(incident(91, start, sensor_id="no-such-sensor")),
        "MISSING_FIELD": orjson.dumps({"incident_id": "x", "sensor_id": "773869"}),
        "FUTURE_TIMESTAMP": codec.encode(incident(92, datetime(2099, 1, 1, tzinfo=UTC))),
    }
    produce(
        kafka_broker,
        kafka.incidents_topic,
        [(codec.encode(r), r["start_time"]) for r in good] + [(v, start) for v in bad.values()],
    )

    with DagsterInstance.ephemeral() as instance:
        days = ingest_and_check(
            instance,
            kafka,
            lake,
            raw_traffic_incidents,
            incidents_offsets_sensor,
            [incidents_valid, incidents_dlq_rate],
            INCIDENTS,
            len(bad) / (len(bad) + len(good)),
        )
    assert days == ["2012-03-01", "2012-03-02"]
    stored = [read_raw_day(tmp_path / "lake", date.fromisoformat(d), INCIDENTS) for d in days]
    assert [len(s) for s in stored] == [4, 2]  # 07:00 (and its update) 14:00 21:00 / 04:00 11:00
    ids = sorted(i for frame in stored for i in frame["incident_id"])
    assert ids == sorted(r["incident_id"] for r in good)
    assert all(frame["is_synthetic"].all() for frame in stored)
    assert set(stored[0]["severity"]) == {"MAJOR"}
    assert list(stored[0].loc[0, "affected_sensors"]) == ["773869", "767541"]
    assert dlq_reasons(kafka_broker, kafka.dlq_topic, 3 * len(bad)) == dict(
        zip(range(len(good), len(good) + len(bad)), bad, strict=True)
    )


def test_weather_lands_once_and_unphysical_values_go_to_dlq(
    kafka_broker: KafkaBroker, kafka: KafkaResource, tmp_path: Path
) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    codec = EventCodec(WEATHER)
    good = [observation(h) for h in range(0, 30)]
    good.append(observation(30, precipitation_mm=None, visibility_km=None))  # not observed
    bad = {
        "OUT_OF_RANGE": codec.encode(observation(5, precipitation_mm=-1.0)),
        "MISSING_FIELD": codec.encode(observation(6, station_id="")),
        "WRONG_TYPE": orjson.dumps(
            {
                "station_id": "KLAX",
                "observed_at": "2012-03-01T06:00:00Z",
                "visibility_km": "far",
                "source": "x",
            }
        ),
    }
    produce(
        kafka_broker,
        kafka.weather_topic,
        [(codec.encode(r), r["observed_at"]) for r in good]
        + [(v, DAY1 + timedelta(hours=5)) for v in bad.values()],
    )

    with DagsterInstance.ephemeral() as instance:
        days = ingest_and_check(
            instance,
            kafka,
            lake,
            raw_weather_observations,
            weather_offsets_sensor,
            [weather_values_valid, weather_dlq_rate],
            WEATHER_ZONE,
            len(bad) / (len(bad) + len(good)),
        )
    assert days == ["2012-03-01", "2012-03-02"]
    stored = [read_raw_day(tmp_path / "lake", date.fromisoformat(d), WEATHER_ZONE) for d in days]
    assert [len(s) for s in stored] == [24, 7]
    late = stored[1].set_index("observed_at").sort_index()
    assert late["precipitation_mm"].isna().iloc[-1] and late["visibility_km"].isna().iloc[-1]
    assert late["precipitation_mm"].iloc[0] == pytest.approx(0.0)  # 0 is 0, null is null
    assert dlq_reasons(kafka_broker, kafka.dlq_topic, 3 * len(bad)) == dict(
        zip(range(len(good), len(good) + len(bad)), bad, strict=True)
    )
