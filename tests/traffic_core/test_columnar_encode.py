"""Column-wise encoding gives byte for byte the messages of the per-record encoder, and the
replay producer built on it sends exactly what it sent record by record, through Kafka too."""

from __future__ import annotations

import random
import re
import struct
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from kafka_helpers import fresh_topics, read_all

from infra.stack.kafka import KafkaBroker
from traffic_core.events import INCIDENT, WEATHER, EncodeError, EventCodec
from traffic_core.events.codec import Categorical, Doubles
from traffic_core.ingestion.ingest_ids import new_ingest_id
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds

SENSORS = ["773869", "767541", "δ-7", "测试🚦", "", "x" * 200]
NAN_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]
SPEEDS = [0.0, -0.0, 61.25, -3.0, 1e308, float("inf"), float("-inf"), float("nan"), NAN_PAYLOAD]
MILLIS = [0, 1, 63, 64, -1, -65, 1_330_560_000_000, (1 << 62), -(1 << 62)]


def random_columns(rng: random.Random, n: int) -> tuple[dict, list[dict]]:
    """Columns for encode_columns, and the same rows as records for encode."""
    sensors = np.array([rng.randrange(len(SENSORS)) for _ in range(n)], int)
    millis = rng.sample(MILLIS, 4)
    times = np.array([rng.randrange(len(millis)) for _ in range(n)], int)
    speeds = np.array(
        [rng.choice(SPEEDS) if rng.random() < 0.7 else rng.uniform(0, 90) for _ in range(n)]
    )
    speed_null = np.array([rng.random() < 0.2 for _ in range(n)], bool)
    volumes = [None, 0, 17, -1, 2**31 - 1, -(2**31)]
    volume = np.array([rng.randrange(len(volumes)) for _ in range(n)], int)
    occupancy = np.array([rng.random() for _ in range(n)])
    occupancy_null = np.array([rng.random() < 0.5 for _ in range(n)], bool)
    source = rng.choice(["metr-la", "synthetic", "ápi", ""])
    is_synthetic = rng.random() < 0.5
    columns = {
        "sensor_id": Categorical(SENSORS, sensors),
        "event_time": Categorical(millis, times),
        "speed_mph": Doubles(speeds, speed_null),
        "volume": Categorical(volumes, volume),
        "occupancy": Doubles(occupancy, occupancy_null),
        "source": source,
        "is_synthetic": is_synthetic,
    }
    if rng.random() < 0.5:
        columns["ingest_id"] = rng.choice([None, "run-1"])
    records = [
        {
            "sensor_id": SENSORS[sensors[i]],
            "event_time": millis[times[i]],
            "speed_mph": None if speed_null[i] else float(speeds[i]),
            "volume": volumes[volume[i]],
            "occupancy": None if occupancy_null[i] else float(occupancy[i]),
            "source": source,
            "is_synthetic": is_synthetic,
            **({"ingest_id": columns["ingest_id"]} if "ingest_id" in columns else {}),
        }
        for i in range(n)
    ]
    return columns, records


@pytest.mark.parametrize("seed", range(40))
def test_columns_encode_like_records_byte_for_byte(seed: int) -> None:
    rng = random.Random(seed)
    columns, records = random_columns(rng, rng.choice([0, 1, 2, rng.randint(3, 500)]))
    codec = EventCodec()
    assert codec.encode_columns(columns) == [codec.encode(r) for r in records]


def test_datetimes_and_millis_give_the_same_bytes() -> None:
    codec = EventCodec()
    stamps = [datetime(2012, 3, 1, 8, m, tzinfo=UTC) for m in (0, 5)]
    millis = [int(s.timestamp() * 1000) for s in stamps]
    common = {"sensor_id": "s", "speed_mph": Doubles(np.ones(2), np.zeros(2, bool)), "source": "x"}
    codes = np.arange(2)
    assert codec.encode_columns(
        common | {"event_time": Categorical(stamps, codes)}
    ) == codec.encode_columns(common | {"event_time": Categorical(millis, codes)})


def test_other_flat_schemas_encode_column_wise() -> None:
    codec = EventCodec(WEATHER)
    observed = datetime(2012, 3, 1, tzinfo=UTC)
    temperature = np.array([14.5, 0.0, -2.25])
    null = np.array([False, True, False])
    values = codec.encode_columns(
        {
            "station_id": "KCQT",
            "observed_at": observed,
            "temperature_c": Doubles(temperature, null),
            "source": "weather-csv",
        }
    )
    assert [codec.decode(v)["temperature_c"] for v in values] == [14.5, None, -2.25]
    record = {"station_id": "KCQT", "observed_at": observed, "source": "weather-csv"}
    assert values[1] == codec.encode(record | {"temperature_c": None})


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"speed_mph": None}, EncodeError, "missing field 'speed_mph'"),
        ({"source": Categorical(["a", 3], np.array([0, 1]))}, EncodeError, "field 'source'"),
        ({"is_synthetic": 1}, EncodeError, "field 'is_synthetic'"),
        ({"sensor_id": Doubles(np.ones(2), np.zeros(2, bool))}, EncodeError, "as string"),
        ({"sensor_id": Categorical(["a"], np.zeros(3, int))}, ValueError, "different lengths"),
        ({"sensor_id": Categorical(["a"], np.zeros(1, int))}, ValueError, "different lengths"),
        ({"speed_mph": Doubles(np.ones(2), np.zeros(3, bool))}, ValueError, "null flags"),
    ],
)
def test_columns_that_do_not_fit_are_refused(change: dict, error: type, match: str) -> None:
    columns = {
        "sensor_id": Categorical(["a", "b"], np.array([0, 1])),
        "event_time": 0,
        "speed_mph": Doubles(np.ones(2), np.zeros(2, bool)),
        "source": "x",
    }
    columns = {k: v for k, v in (columns | change).items() if v is not None}
    with pytest.raises(error, match=match):
        EventCodec().encode_columns(columns)


def test_nested_schemas_are_refused() -> None:
    with pytest.raises(EncodeError, match="flat"):
        EventCodec(INCIDENT).encode_columns({})


class RecordingSink:
    """The ReadingProducer interface, keeping what would be sent."""

    topic, dlq_topic, failures = "events", "dlq", 0

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, topic: str, value: bytes, key: bytes, ts: int, headers: list | None = None):
        self.sent.append((topic, value, key, ts, headers))

    def send_row(self, values: list[bytes], keys: list[bytes], timestamp_ms: int) -> None:
        for value, key in zip(values, keys, strict=True):
            if value:
                self.send(self.topic, value, key, timestamp_ms)

    def flush(self) -> int:
        return 0


def speeds_with_rejects() -> pd.DataFrame:
    """More steps than one encoded block, missing cells, and three cells for the DLQ."""
    rng = np.random.default_rng(5)
    index = pd.date_range("2012-03-01", periods=600, freq="5min")
    speeds = pd.DataFrame(rng.uniform(0, 80, (600, 5)), index=index, columns=[1, 22, 3, 4, 5])
    speeds.iloc[::7, 1] = np.nan
    speeds.iloc[3, 2], speeds.iloc[4, 0], speeds.iloc[5, 4] = -1.0, 500.0, np.inf
    return speeds


def record_by_record(
    speeds: pd.DataFrame, events: str, dlq: str, ingest_id: str | None
) -> list[tuple]:
    """(topic, value, key, timestamp) of each message as the per-record producer sent them."""
    codec = EventCodec()
    sent = []
    for stamp, row in speeds.iterrows():
        millis = int(stamp.tz_localize("UTC").timestamp() * 1000)
        values = {
            str(s): codec.encode(
                {
                    "sensor_id": str(s),
                    "event_time": millis,
                    "speed_mph": None if np.isnan(v) else v,
                    "source": "metr-la",
                    "is_synthetic": False,
                    "ingest_id": ingest_id,
                }
            )
            for s, v in row.items()
        }
        bad = [str(s) for s, v in row.items() if v < 0 or v > 120 or np.isinf(v)]
        sent += [(dlq, values[s], s.encode(), millis) for s in bad]
        sent += [(events, v, s.encode(), millis) for s, v in values.items() if s not in bad]
    return sent


def test_replay_sends_what_the_record_encoder_gives() -> None:
    speeds = speeds_with_rejects()
    sink = RecordingSink()
    summary = replay_speeds(
        speeds, sink, source="metr-la", is_synthetic=False, ingest_id="ingest-test-1"
    )

    expected = record_by_record(speeds, sink.topic, sink.dlq_topic, "ingest-test-1")
    assert [m[:4] for m in sink.sent] == expected
    assert summary.ingest_id == "ingest-test-1"
    assert summary.events == speeds.size - 3
    assert sum(summary.rejected.values()) == 3
    assert summary.missing == int(speeds.isna().sum().sum())


def by_topic_and_key(messages: list[tuple]) -> dict[tuple, list[tuple]]:
    """Each key's (value, timestamp) in order: the order Kafka keeps (one key, one partition)."""
    out: dict[tuple, list[tuple]] = {}
    for topic, value, key, timestamp in messages:
        out.setdefault((topic, key), []).append((value, timestamp))
    return out


@pytest.mark.integration
def test_replay_reaches_kafka_with_keys_timestamps_and_bytes(kafka_broker: KafkaBroker) -> None:
    events, dlq = fresh_topics(kafka_broker, partitions=3)
    speeds = speeds_with_rejects()
    sink = ReadingProducer(kafka_broker.bootstrap_servers, topic=events, dlq_topic=dlq)
    summary = replay_speeds(speeds, sink, source="metr-la", is_synthetic=False)
    assert summary.delivery_failures == 0

    received = [
        (m.topic(), m.value(), m.key(), m.timestamp()[1])
        for topic, count in ((events, summary.events), (dlq, 3))
        for m in read_all(kafka_broker, topic, count)
    ]
    expected = record_by_record(speeds, events, dlq, summary.ingest_id)
    assert by_topic_and_key(received) == by_topic_and_key(expected)


def test_each_replay_gets_its_own_ingest_id() -> None:
    speeds = speeds_with_rejects()
    ids = [
        replay_speeds(speeds, RecordingSink(), source="metr-la", is_synthetic=False).ingest_id
        for _ in range(2)
    ]
    assert ids[0] != ids[1]
    assert all(re.fullmatch(r"ingest-\d{8}T\d{6}-[0-9a-f]{6}", i) for i in ids)
    assert new_ingest_id(datetime(2026, 11, 26, 4, 5, 6, tzinfo=UTC)).startswith(
        "ingest-20261126T040506-"
    )
