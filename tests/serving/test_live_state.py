"""The API's live windows: closing rules, duplicates, late and missing data, the ring, equality
with the real METR-LA days and their batch features, and the Kafka consumer that feeds and
rebuilds them on the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka_helpers import fresh_topics

from infra.stack.kafka import KafkaBroker
from serving.live import LiveConsumer, LiveWindows
from serving.live.state import ReadingOrigin
from traffic_core import features as f
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.kafka.offsets import group_positions
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.windows import CongestionThresholds

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
T0 = pd.Timestamp("2012-03-01 08:00", tz="UTC")
SENSORS = ["a", "b", "c"]


def at(minutes: float) -> int:
    """Epoch millis `minutes` after T0."""
    return (T0 + pd.Timedelta(minutes=minutes)).value // 1_000_000


def window(minutes: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minutes)


def feed(
    state: LiveWindows, rows: list[tuple[str, float, float | None]], synthetic: bool = False
) -> list[pd.Timestamp]:
    """Add (sensor, minutes after T0, speed or None) readings as one batch."""
    return state.add(
        np.array([r[0] for r in rows], dtype=object),
        np.array([at(r[1]) for r in rows], dtype=np.int64),
        np.array([np.nan if r[2] is None else r[2] for r in rows]),
        np.full(len(rows), synthetic),
    )


def test_each_kept_reading_remembers_its_replay_and_kafka_position() -> None:
    state = LiveWindows(SENSORS, hours=1.0, lateness="0min")

    def add(rows: list[tuple[str, float]], ids: list[str | None], offsets: list[int]) -> None:
        state.add(
            np.array([r[0] for r in rows], dtype=object),
            np.array([at(r[1]) for r in rows], dtype=np.int64),
            np.full(len(rows), 50.0),
            None,
            ReadingOrigin(ids, np.full(len(rows), 2), np.array(offsets)),
            close=False,
        )

    add([("a", 0), ("b", 1), ("c", 2)], ["run-1", "run-1", None], [10, 11, 12])
    add([("a", 5), ("a", 6)], ["run-2", "run-3"], [13, 14])  # the later reading wins
    state.add(np.array(["b"], dtype=object), np.array([at(7)]), np.array([50.0]), close=False)

    assert state.window_ingest_ids(window(0)) == {"run-1": 2, None: 1}
    assert state.window_ingest_ids(window(5)) == {"run-3": 1, None: 1}
    assert state.window_ingest_ids(window(-60)) == {}
    a, b, c, unknown = state.sources(window(5), ["a", "b", "c", "zz"], "events", steps=12)
    assert a == {
        "ingest_id": "run-3",
        "kafka_topic": "events",
        "kafka_partition": 2,
        "kafka_offset": 14,
        "reading_time": window(6).to_pydatetime(),
    }
    assert b is not None and b["ingest_id"] is None and b["kafka_offset"] is None  # no origin
    assert c is not None and (c["ingest_id"], c["kafka_offset"]) == (None, 12)
    assert unknown is None
    # Issued at window 0, the newest reading used is window 0's, not a newer one.
    assert state.sources(window(0), ["a"], "events", steps=12)[0]["kafka_offset"] == 10
    assert state.sources(window(0), ["a"], "events", steps=0) == [None]


@pytest.fixture(scope="module")
def six_days(shared_data: Path) -> pd.DataFrame:
    return load_speed_csv(shared_data / SIX_DAYS)


def replay_into(state: LiveWindows, speeds: pd.DataFrame) -> list[pd.Timestamp]:
    """Each 5-minute row of a wide frame as one batch of 207 readings, in event order."""
    ids = np.asarray(speeds.columns, dtype=object)
    stamps = speeds.index.tz_localize("UTC").as_unit("ms").asi8
    values = speeds.to_numpy("float64")
    closed: list[pd.Timestamp] = []
    for stamp, row in zip(stamps, values, strict=True):
        closed += state.add(ids, np.full(len(ids), stamp), row)
    return closed


def expected_speeds(speeds: pd.DataFrame) -> pd.DataFrame:
    """The CSV rows as the state must give them: float64, UTC, 0 mph missing."""
    frame = speeds.astype("float64").tz_localize("UTC")
    return frame.mask(frame == 0.0)


# Closing rules -------------------------------------------------------------------------------


def test_a_window_closes_once_every_sensor_has_reported() -> None:
    state = LiveWindows(SENSORS)
    assert feed(state, [("a", 0, 50.0), ("b", 0, 51.0)]) == []
    assert state.latest_closed() is None
    assert feed(state, [("c", 1.5, 52.0)]) == [window(0)]  # any time inside the window
    assert state.latest_closed() == window(0)
    assert feed(state, [("c", 0, 53.0)]) == []  # closes at most once
    assert state.stats().windows_closed == 1


def test_the_watermark_closes_incomplete_windows_in_order() -> None:
    state = LiveWindows(SENSORS)  # lateness: one window
    assert feed(state, [("a", 0, 50.0), ("b", 0, 50.0)]) == []
    # Window 5 is complete but waits for window 0; the watermark (5 - 5 = 0) is not past 0's end.
    assert feed(state, [(s, 5, 60.0) for s in SENSORS]) == []
    assert state.stats().watermark == window(0)
    assert feed(state, [("a", 10, 70.0)]) == [window(0), window(5)]
    assert state.latest_closed() == window(5)
    # A gap in the stream closes empty windows too, once the watermark passes them.
    assert feed(state, [("a", 30, 70.0)]) == [window(10), window(15), window(20)]
    assert state.speeds(end=window(20), steps=2).isna().all().all()


def test_lateness_zero_closes_a_window_as_soon_as_a_later_one_starts() -> None:
    state = LiveWindows(SENSORS, lateness="0min")
    feed(state, [("a", 0, 50.0)])
    assert feed(state, [("a", 5, 50.0)]) == [window(0)]


def test_duplicates_never_double_count_and_the_last_one_wins() -> None:
    state = LiveWindows(SENSORS)
    # Three readings of sensor a for one event time are one reported sensor, not three.
    assert feed(state, [("a", 0, 50.0), ("a", 0, 51.0), ("b", 0, 52.0), ("a", 0, 53.0)]) == []
    assert feed(state, [("b", 0, 54.0)]) == []
    assert state.speeds(end=window(0), steps=1).iloc[0].tolist()[:2] == [53.0, 54.0]
    assert feed(state, [("c", 0, 55.0)]) == [window(0)]
    assert state.stats().duplicates == 3
    # Within a window the latest event time wins, whatever the arrival order.
    feed(state, [("a", 7, 40.0), ("a", 6, 41.0)])
    feed(state, [("a", 5, 42.0)])
    assert state.speeds(end=window(5), steps=1)["a"].item() == 40.0
    assert state.current(window(5)).sensors.loc["a", "reading_time"] == T0 + pd.Timedelta("7min")


def test_late_readings_update_a_closed_window_and_are_counted() -> None:
    state = LiveWindows(SENSORS)
    feed(state, [("a", 0, 50.0), ("b", 0, 50.0)])
    assert feed(state, [("a", 10, 60.0)]) == [window(0)]  # 5 stays open: nothing from it yet
    assert feed(state, [("c", 0, 30.0), ("b", 0, 31.0)]) == []
    assert state.speeds(end=window(0), steps=1).iloc[0].tolist() == [50.0, 31.0, 30.0]
    assert state.stats().late_updates == 2
    assert state.stats().windows_closed == 1


def test_unknown_sensors_are_counted_and_ignored() -> None:
    state = LiveWindows(SENSORS)
    assert feed(state, [("zz", 60, 50.0), ("a", 0, 40.0)]) == []
    stats = state.stats()
    assert stats.unknown_sensor == 1 and stats.readings == 2
    assert stats.watermark == window(0) - pd.Timedelta("5min")  # the unknown one moves nothing
    assert list(state.speeds(end=window(0), steps=1).columns) == SENSORS


def test_missing_readings_report_without_a_speed() -> None:
    state = LiveWindows(SENSORS)
    assert feed(state, [("a", 0, 0.0), ("b", 0, None), ("c", 0, 61.0)]) == [window(0)]
    snapshot = state.current()
    assert snapshot is not None and snapshot.reported == 3
    assert snapshot.sensors["speed_mph"].isna().tolist() == [True, True, False]
    assert snapshot.sensors["congestion"].tolist() == ["unknown", "unknown", "free_flow"]
    assert state.stats().missing == 2


def test_the_ring_keeps_only_its_span() -> None:
    state = LiveWindows(SENSORS, hours=0.25)  # 3 windows
    assert state.slots == 3
    feed(state, [(s, 0, 10.0) for s in SENSORS], synthetic=True)
    assert state.is_synthetic
    for minute in (5, 10, 15, 20):
        feed(state, [(s, minute, float(minute)) for s in SENSORS])
    assert not state.is_synthetic  # the simulated window has left the span
    frame = state.speeds(steps=5)
    assert frame.index[-1] == window(20)
    assert frame["a"].iloc[:2].isna().all()
    assert frame["a"].iloc[2:].tolist() == [10.0, 15.0, 20.0]
    assert feed(state, [("a", 5, 99.0)]) == []  # older than the span: dropped
    assert state.stats().too_late == 1
    assert state.current(window(5)) is None
    # A jump beyond the span empties every slot.
    feed(state, [(s, 120, 1.0) for s in SENSORS])
    after = state.speeds(end=window(120), steps=4)["a"]
    assert after.iloc[:3].isna().all() and after.iloc[3] == 1.0


def test_speeds_is_the_feature_input_frame() -> None:
    state = LiveWindows(SENSORS)
    empty = state.speeds()
    assert empty.shape == (0, 3) and str(empty.index.tz) == "UTC"
    feed(state, [(s, 0, 50.0) for s in SENSORS])
    frame = state.speeds()
    assert frame.shape == (36, 3) and frame.index[-1] == window(0)
    assert frame.index.tz is not None and str(frame.index.tz) == "UTC"
    assert (np.diff(frame.index.as_unit("ns").asi8) == pd.Timedelta("5min").value).all()
    assert (frame.dtypes == "float64").all() and list(frame.columns) == SENSORS
    naive = state.speeds(end=pd.Timestamp("2012-03-01 08:00"), steps=12)
    pd.testing.assert_frame_equal(naive, frame.iloc[-12:])
    with pytest.raises(ValueError, match="5-minute"):
        state.speeds(end=window(0) + pd.Timedelta("1min"))
    frame.iloc[-1, 0] = -1.0  # a copy: readers never see or change the store
    assert state.speeds().iloc[-1, 0] == 50.0


def test_current_snapshot_of_the_newest_closed_window() -> None:
    state = LiveWindows(SENSORS, thresholds=CongestionThresholds(30.0, 50.0))
    assert state.current() is None
    before = time.time()
    feed(state, [("a", 0, 20.0), ("b", 0, 40.0), ("c", 0, 55.0)], synthetic=True)
    feed(state, [("a", 5, 20.0)])  # open window: not the snapshot
    snapshot = state.current()
    assert snapshot is not None and snapshot.window_start == window(0)
    assert snapshot.sensors["congestion"].tolist() == ["severe", "congested", "free_flow"]
    assert (snapshot.sensors["reading_time"] == window(0)).all()
    assert snapshot.is_synthetic and snapshot.reported == 3
    assert snapshot.closed_at is not None and before <= snapshot.closed_at <= time.time()
    open_window = state.current(window(5))
    assert open_window is not None and open_window.closed_at is None
    assert open_window.sensors["reading_time"].isna().tolist() == [False, True, True]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        LiveWindows(["a", "a"])
    with pytest.raises(ValueError, match="lateness"):
        LiveWindows(SENSORS, hours=0.25, lateness="15min")
    with pytest.raises(ValueError, match="length"):
        LiveWindows(SENSORS).add(np.array(["a"]), np.array([1, 2]), np.array([1.0]))


# The real days ---------------------------------------------------------------------------------


def test_real_days_through_add_equal_the_csv(six_days: pd.DataFrame) -> None:
    state = LiveWindows(six_days.columns, hours=3.0)
    first_day = six_days.loc[:"2012-03-01 23:55"]
    closed = replay_into(state, first_day)
    assert closed == list(first_day.index.tz_localize("UTC"))
    pd.testing.assert_frame_equal(
        state.speeds(),
        expected_speeds(first_day.iloc[-36:]),
        check_freq=False,
        check_column_type=False,
    )
    replay_into(state, six_days.loc["2012-03-02":])
    pd.testing.assert_frame_equal(
        state.speeds(),
        expected_speeds(six_days.iloc[-36:]),
        check_freq=False,
        check_column_type=False,
    )
    stats = state.stats()
    assert stats.readings == six_days.size and stats.windows_closed == len(six_days)
    assert stats.too_late == stats.late_updates == stats.duplicates == stats.unknown_sensor == 0
    assert not state.is_synthetic


def test_live_features_from_the_state_equal_batch_features(
    six_days: pd.DataFrame, shared_data: Path
) -> None:
    # Knocked-out readings (NaN and METR-LA's 0 marker) must stay missing through the state.
    rng = np.random.default_rng(3)
    holey = six_days.mask(rng.random(six_days.shape) < 0.05)
    holey.loc["2012-03-02 07:00":"2012-03-02 07:40", "773869"] = 0.0
    graph = load_metr_la_graph(shared_data / "metr-la")
    context = f.FeatureContext.from_graph(graph, f.fit_profile(holey.loc[:"2012-03-01 23:55"]))
    holey = holey.loc["2012-03-01 22:00":"2012-03-02 23:55"]
    batch = f.make_features(holey, context)
    state = LiveWindows(holey.columns, hours=1.0)
    replayed = holey.index[0] - pd.Timedelta("5min")
    for at_ in ("2012-03-02 00:00", "2012-03-02 07:30", "2012-03-02 07:35", "2012-03-02 17:05"):
        moment = pd.Timestamp(at_)
        replay_into(state, holey.loc[replayed + pd.Timedelta("5min") : moment])
        replayed = moment
        t = moment.tz_localize("UTC")
        assert state.latest_closed() == t
        live = f.make_features(state.speeds(), context, at=t)
        expected = batch[batch["timestamp"] == moment].reset_index(drop=True)
        assert len(live) == 207 and live["sensor_id"].tolist() == expected["sensor_id"].tolist()
        assert (live["timestamp"] == t).all()
        np.testing.assert_array_equal(
            live[list(f.FEATURE_NAMES)].to_numpy(), expected[list(f.FEATURE_NAMES)].to_numpy()
        )


def test_add_and_speeds_are_fast(six_days: pd.DataFrame) -> None:
    state = LiveWindows(six_days.columns)
    ids = np.asarray(six_days.columns, dtype=object)
    stamps = six_days.index.tz_localize("UTC").as_unit("ms").asi8
    values = six_days.to_numpy("float64")
    adds, reads = [], []
    for i in range(288):
        start = time.perf_counter()
        state.add(ids, np.full(len(ids), stamps[i]), values[i])
        adds.append(time.perf_counter() - start)
        start = time.perf_counter()
        state.speeds(steps=12)
        reads.append(time.perf_counter() - start)
    assert np.median(adds) < 0.002 and np.median(reads) < 0.002  # measured ~0.25 / ~0.1 ms


def test_readers_never_see_a_half_written_window(six_days: pd.DataFrame) -> None:
    """A window is written under the lock in one piece: every row a reader gets is either
    empty or exactly the CSV's row, while another thread keeps adding."""
    state = LiveWindows(six_days.columns, hours=1.0)
    expected = expected_speeds(six_days.iloc[:400])
    done = threading.Event()
    torn: list[pd.Timestamp] = []

    def read() -> None:
        while not done.is_set():
            frame = state.speeds(end=expected.index[-1], steps=len(expected))
            filled = frame.dropna(how="all")
            differs = (filled != expected.loc[filled.index]).any(axis=1)
            torn.extend(filled.index[differs])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        replay_into(state, six_days.iloc[:400])
    finally:
        done.set()
        reader.join()
    assert torn == []


# The consumer on the real broker -------------------------------------------------------------


class Recorder:
    """on_close callback that remembers every call and when it came."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[float, list[pd.Timestamp]]] = []
        self.fail = fail

    def __call__(self, closed: list[pd.Timestamp]) -> None:
        self.calls.append((time.perf_counter(), list(closed)))
        if self.fail:
            raise RuntimeError("callback failure must not stop the consumer")

    @property
    def windows(self) -> list[pd.Timestamp]:
        return [w for _, call in self.calls for w in call]


def wait_for(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def garbage(broker: KafkaBroker, topic: str, stamp: pd.Timestamp) -> None:
    """A record no decoder accepts, stamped like the readings around it."""
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(
        topic,
        b"\x00\x00\x00\x00\x01\xff\xff\xff",
        b"773869",
        partition=0,
        timestamp=stamp.value // 1_000_000,
    )
    assert producer.flush(10) == 0


def committed(broker: KafkaBroker, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (negative where none; empty while the
    coordinator cannot answer), asked through a consumer of the group (`group_positions` says
    why not through the admin client)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        return {p: done for p, (done, _high) in group_positions(consumer, topic).items()}
    except KafkaException:
        return {}
    finally:
        consumer.close()


def end_offsets(broker: KafkaBroker, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "ends"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


@pytest.mark.integration
def test_consumer_rebuilds_follows_and_restarts_from_kafka(
    kafka_broker: KafkaBroker, six_days: pd.DataFrame
) -> None:
    events, dlq = fresh_topics(kafka_broker)
    sink = ReadingProducer(kafka_broker.bootstrap_servers, topic=events, dlq_topic=dlq)
    two_hours = six_days.iloc[:24]
    replay_speeds(two_hours, sink, source="metr-la", is_synthetic=False)
    garbage(kafka_broker, events, pd.Timestamp("2012-03-01 01:30"))
    expected = expected_speeds(six_days.iloc[:25])

    state = LiveWindows(six_days.columns, hours=3.0)
    recorder = Recorder()
    group = f"api-replica-{uuid.uuid4().hex[:8]}"
    consumer = LiveConsumer(kafka_broker.bootstrap_servers, events, state, recorder, group_id=group)
    consumer.start()
    consumer.start()  # idempotent
    try:
        assert consumer.wait_ready(30), "the rebuild did not catch up"
        assert consumer.lag() == 0 and consumer.rebuild_messages == 24 * 207 + 1
        assert consumer.rejected() == {"UNDECODABLE": 1} and consumer.bad_messages == 1
        pd.testing.assert_frame_equal(
            state.speeds(steps=24), expected.iloc[:24], check_freq=False, check_column_type=False
        )
        # The windows closed while rebuilding are announced once, in order, when ready.
        assert recorder.windows == list(expected.index[:24]) and len(recorder.calls) == 1

        replay_speeds(six_days.iloc[24:25], sink, source="metr-la", is_synthetic=False)
        assert wait_for(lambda: len(recorder.calls) == 2, 10), "the live window did not close"
        assert recorder.calls[1][1] == [expected.index[24]]
        pd.testing.assert_frame_equal(
            state.speeds(steps=25), expected, check_freq=False, check_column_type=False
        )
        assert state.stats().late_updates == 0
    finally:
        consumer.stop()
        consumer.stop()
    assert not consumer.running and not consumer.ready
    # The replica's group holds what it applied: every message, so Kafka's tools show lag 0.
    ends = end_offsets(kafka_broker, events)
    assert wait_for(lambda: committed(kafka_broker, group, events) == ends, 10)

    # A restart: a new state rebuilt from the last hour only, before it reports ready.
    restarted = LiveWindows(six_days.columns, hours=3.0)
    failing = Recorder(fail=True)
    again = LiveConsumer(
        kafka_broker.bootstrap_servers, events, restarted, failing, rebuild_hours=1.0
    )
    again.start()
    try:
        assert again.wait_ready(30)
        frame = restarted.speeds()
        filled = frame.dropna(how="all")
        assert list(filled.index) == list(expected.index[-12:])
        pd.testing.assert_frame_equal(
            filled, expected.iloc[-12:], check_freq=False, check_column_type=False
        )
        assert restarted.stats().readings == 12 * 207  # nothing older was read
        assert again.rejected() == {"UNDECODABLE": 1}  # the garbage lies in the last hour
        assert failing.windows == list(expected.index[-12:])
        assert again.callback_errors == 1 and again.running
        stats = again.stats()
        assert stats["ready"] == 1 and stats["lag"] == 0
    finally:
        again.stop()


@pytest.mark.integration
def test_an_empty_topic_is_ready_at_once(kafka_broker: KafkaBroker) -> None:
    events, _ = fresh_topics(kafka_broker, partitions=3)
    state = LiveWindows(["773869"])
    consumer = LiveConsumer(kafka_broker.bootstrap_servers, events, state)
    consumer.start()
    try:
        assert consumer.wait_ready(15)
        assert consumer.lag() == 0 and state.latest_closed() is None
    finally:
        consumer.stop()


@pytest.mark.integration
def test_a_topic_created_later_is_waited_for(
    kafka_broker: KafkaBroker, six_days: pd.DataFrame
) -> None:
    topic = f"late-{uuid.uuid4().hex[:8]}"
    state = LiveWindows(six_days.columns)
    recorder = Recorder()
    consumer = LiveConsumer(
        kafka_broker.bootstrap_servers, topic, state, recorder, retry_interval=0.2
    )
    consumer.start()
    try:
        time.sleep(1.0)
        assert consumer.running and not consumer.ready
        admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
        ensure_topics(admin, [TopicSpec(topic, 2)])
        assert consumer.wait_ready(15)
        sink = ReadingProducer(kafka_broker.bootstrap_servers, topic=topic, dlq_topic=topic)
        replay_speeds(six_days.iloc[:1], sink, source="metr-la", is_synthetic=False)
        assert wait_for(lambda: recorder.windows == [expected_speeds(six_days).index[0]], 10)
    finally:
        consumer.stop()
