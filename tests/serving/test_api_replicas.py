"""Two API replicas over the real broker: both serve every window, one publishes it to Kafka,
and when that one stops the other takes over."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
from api_fixtures import LIVE_FROM, ApiServer, api_env, produce_real, real_speeds
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka_helpers import fresh_topics
from prometheus_client.parser import text_string_to_metric_families

from infra.stack.kafka import KafkaBroker
from traffic_core.kafka.topics import TopicSpec, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SENSOR = "773869"
SENSORS = 207


@pytest.fixture(scope="module")
def replicas(
    kafka_broker: KafkaBroker,
    model_registry: Path,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ApiServer, ApiServer]]:
    """Replica `a` starts first (and so is elected), `b` joins the same election."""
    topic, dlq = fresh_topics(kafka_broker)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(f"{topic}-{kind}", 3) for kind in ("predictions", "alerts")])
    speeds = real_speeds(shared_data)
    produce_real(
        kafka_broker.bootstrap_servers,
        topic,
        dlq,
        speeds.loc[LIVE_FROM : LIVE_FROM + pd.Timedelta("115min")],
    )
    env = api_env(model_registry, kafka_broker, topic)
    logs = tmp_path_factory.mktemp("replica-logs")
    a, b = ApiServer(env, topic, dlq), ApiServer(env, topic, dlq)
    try:
        a.start(logs)
        b.start(logs)
        yield a, b
    finally:
        a.stop()
        b.stop()


def metric(server: ApiServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    samples = (s for f in text_string_to_metric_families(text) for s in f.samples)
    return next(s.value for s in samples if s.name == name)


def served_window(server: ApiServer) -> pd.Timestamp:
    answer = httpx.get(f"{server.url}/v1/forecasts/{SENSOR}", headers=server.headers(), timeout=10)
    return pd.Timestamp(answer.json()["issued_for"])


def close_window(servers: list[ApiServer], shared_data: Path, window: pd.Timestamp) -> None:
    """Produce `window`'s readings and wait until every server in `servers` forecast from it."""
    first = servers[0]
    speeds = real_speeds(shared_data)
    produce_real(first.bootstrap_servers, first.topic, first.dlq, speeds.loc[[window]])
    deadline = time.monotonic() + 60
    want = window.tz_localize("UTC")
    while any(served_window(s) != want for s in servers):
        assert time.monotonic() < deadline, f"window {window} not served by every replica"
        time.sleep(0.2)


def published(server: ApiServer) -> Counter[pd.Timestamp]:
    """Forecast records on the predictions topic per window (issued_for)."""
    topic = f"{server.topic}-predictions"
    consumer = Consumer(
        {"bootstrap.servers": server.bootstrap_servers, "group.id": "replica-test-reader"}
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts]
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        counts: Counter[pd.Timestamp] = Counter()
        read = 0
        deadline = time.monotonic() + 30
        while read < sum(ends) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            read += 1
            counts[pd.Timestamp(orjson.loads(message.value())["issued_for"])] += 1
        assert read == sum(ends), "predictions topic not read to its end"
        return counts
    finally:
        consumer.close()


def wait_until_leading(server: ApiServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while metric(server, "api_publisher_leading") != 1.0:
        assert time.monotonic() < deadline, "no replica took over publishing"
        time.sleep(0.2)


def test_one_replica_publishes_each_window_and_another_takes_over(
    replicas: tuple[ApiServer, ApiServer], shared_data: Path
) -> None:
    a, b = replicas
    assert (metric(a, "api_publisher_leading"), metric(b, "api_publisher_leading")) == (1.0, 0.0)
    first = LIVE_FROM + pd.Timedelta("120min")
    close_window([a, b], shared_data, first)
    a.stop()  # a clean stop leaves the group: b is elected without waiting for a timeout
    wait_until_leading(b)
    second = first + pd.Timedelta("5min")
    close_window([b], shared_data, second)
    counts = published(b)
    for window in (first, second):
        records = counts[window.tz_localize("UTC")]
        assert records == SENSORS, f"window {window}: {records} records, want one per sensor"
