"""The API's incident book, weather board and their consumer's handling of records, in process:
road-graph reach, statuses in event time, updates by id, bounded memory, and generated good and
bad messages (no bad record stops the stream; each is counted by reason)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.live.context import IncidentBook, IncidentReach, WeatherBoard
from serving.live.context_consumer import ContextConsumer, incident_consumer, weather_consumer
from traffic_core.datasets import SensorGraph
from traffic_core.events import INCIDENT, WEATHER, EventCodec

T0 = datetime(2012, 3, 6, 6, tzinfo=UTC)
CHAIN = ["a", "b", "c", "d", "e"]
OPEN = timedelta(hours=6)
RECENT = timedelta(hours=2)
SETTINGS = settings(derandomize=True, deadline=None, max_examples=60, database=None)


def chain_graph() -> SensorGraph:
    """a -> b -> c -> d -> e (traffic flows left to right)."""
    n = len(CHAIN)
    adjacency = np.eye(n)
    for i in range(n - 1):
        adjacency[i, i + 1] = 0.5
    locations = pd.DataFrame(
        {"sensor_id": CHAIN, "latitude": 34.0 + np.arange(n) / 100, "longitude": -118.0}
    )
    return SensorGraph(CHAIN, locations, adjacency)


REACH = IncidentReach(chain_graph(), max_hops=2)


def report(
    incident_id: str = "I1",
    sensor_id: str = "c",
    start: datetime = T0,
    end: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "sensor_id": sensor_id,
        "start_time": start,
        "end_time": end,
        "severity": "MAJOR",
        "affected_sensors": [],
        "source": "synthetic",
        "is_synthetic": True,
        **extra,
    }


def test_reach_is_signed_by_direction_and_limited_in_hops() -> None:
    assert REACH.of("c") == {"a": 2, "b": 1, "c": 0, "d": -1, "e": -2}
    assert REACH.of("a") == {"a": 0, "b": -1, "c": -2}
    assert REACH.of("unknown") == {}


def test_reported_affected_sensors_join_the_stretch_without_hops() -> None:
    book = IncidentBook(IncidentReach(chain_graph(), max_hops=0))
    book.apply([report(affected_sensors=["a", "nowhere"])])
    (incident,) = book.active(T0)
    assert dict(incident.reach) == {"c": 0, "a": None}


def test_an_end_report_moves_an_incident_from_active_to_recent_then_out() -> None:
    book = IncidentBook(REACH, open_for=OPEN, recent_for=RECENT)
    book.apply([report()])
    assert [(i.incident_id, s) for i, s in book.listing(T0 + timedelta(minutes=5))] == [
        ("I1", "active")
    ]
    end = T0 + timedelta(minutes=30)
    book.apply([report(end=end)])  # the same id: replaces the first report
    assert len(book) == 1
    assert [s for _, s in book.listing(end)] == ["ended"]
    assert book.flags(end) == {}
    assert book.listing(end + RECENT + timedelta(minutes=1)) == []
    assert len(book) == 0


def test_an_incident_without_end_expires_and_a_future_one_is_not_listed() -> None:
    book = IncidentBook(REACH, open_for=OPEN, recent_for=RECENT)
    book.apply([report(), report("later", start=T0 + timedelta(hours=1))])
    assert [s for _, s in book.listing(T0 + OPEN)] == ["active", "expired"]
    assert [i.incident_id for i, _ in book.listing(T0)] == ["I1"]


def test_flags_name_each_reached_sensor_nearest_incident_first() -> None:
    book = IncidentBook(REACH)
    book.apply([report("far", "a"), report("near", "b")])
    flags = book.flags(T0 + timedelta(minutes=5))
    assert [f["incident_id"] for f in flags["b"]] == ["near", "far"]
    assert [f["hops"] for f in flags["b"]] == [0, -1]
    assert set(flags) == {"a", "b", "c", "d"}


HALF_HOUR = timedelta(minutes=30)
reports = st.lists(
    st.builds(
        lambda incident_id, sensor_id, start, length: report(
            incident_id,
            sensor_id,
            T0 + start * HALF_HOUR,
            None if length is None else T0 + (start + length) * HALF_HOUR,
        ),
        st.sampled_from(["I1", "I2", "I3", "I4"]),
        st.sampled_from(CHAIN),
        st.integers(0, 20),
        st.none() | st.integers(0, 16),
    ),
    max_size=12,
)


@SETTINGS
@given(reports, st.integers(0, 40).map(lambda k: T0 + k * HALF_HOUR))
def test_book_matches_the_last_report_of_each_id(batch: list[dict], at: datetime) -> None:
    """Model: the last report per id; active while started and not finished; recent while
    finished within RECENT; flags = active incidents x their reach."""
    book = IncidentBook(REACH, open_for=OPEN, recent_for=RECENT)
    book.apply(batch)
    last = {r["incident_id"]: r for r in batch}

    def finished(r: dict) -> datetime:
        return r["end_time"] if r["end_time"] is not None else r["start_time"] + OPEN

    active = {k for k, r in last.items() if r["start_time"] <= at < finished(r)}
    recent = {k for k, r in last.items() if at - RECENT <= finished(r) <= at}
    listed = {i.incident_id: s for i, s in book.listing(at)}
    assert {k for k, s in listed.items() if s == "active"} == active
    assert {k for k, s in listed.items() if s != "active"} == recent
    expected = {(s, k) for k in active for s in REACH.of(last[k]["sensor_id"])}
    got = {(s, f["incident_id"]) for s, flags in book.flags(at).items() for f in flags}
    assert got == expected


@SETTINGS
@given(st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=40), st.integers(1, 5))
def test_memory_is_bounded_whatever_arrives(ids: list[str], limit: int) -> None:
    book = IncidentBook(REACH, max_incidents=limit)
    for k, incident_id in enumerate(ids):
        book.apply([report(incident_id, start=T0 + k * timedelta(minutes=1))])
        assert len(book) <= limit
    board = WeatherBoard(max_stations=limit)
    board.apply(
        {"station_id": s, "observed_at": T0 + k * timedelta(minutes=1)} for k, s in enumerate(ids)
    )
    assert len(board) == min(limit, len(set(ids)))


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from(["KLAX", "KCQT", "KBUR"]), st.integers(0, 10)), max_size=20)
)
def test_weather_keeps_each_stations_newest_observation(seen: list[tuple[str, int]]) -> None:
    board = WeatherBoard()
    board.apply(
        {"station_id": s, "observed_at": T0 + timedelta(minutes=m), "order": k}
        for k, (s, m) in enumerate(seen)
    )
    newest: dict[str, tuple[int, int]] = {}
    for k, (s, m) in enumerate(seen):
        if s not in newest or m >= newest[s][0]:
            newest[s] = (m, k)
    got = {r["station_id"]: (r["observed_at"], r["order"]) for r in board.latest()}
    assert got == {s: (T0 + timedelta(minutes=m), k) for s, (m, k) in newest.items()}


# The consumer's handling of messages (no broker: its batches are handed in directly) ---------


def _messages(values: list[bytes | None]) -> list[Message]:
    return [
        Message(topic="t", partition=0, offset=k, value=v, key=None) for k, v in enumerate(values)
    ]


def _incident_consumer() -> tuple[ContextConsumer, IncidentBook, list[int]]:
    book = IncidentBook(REACH)
    changes: list[int] = []
    consumer = incident_consumer(
        "127.0.0.1:1", "t", CHAIN, book.apply, lambda: changes.append(len(book))
    )
    return consumer, book, changes


GOOD = EventCodec(INCIDENT).encode(report("ok"))
bad_values = st.one_of(
    st.binary(max_size=64),
    st.just(None),
    st.builds(lambda tail: b"\x00\x00\x00\x00\x02" + tail, st.binary(max_size=32)),
    st.builds(lambda tail: GOOD[:-3] + tail, st.binary(max_size=3)),
    st.fixed_dictionaries(
        {
            "incident_id": st.text(max_size=4),
            "sensor_id": st.sampled_from([*CHAIN, "zz", ""]),
            "start_time": st.sampled_from(["2012-03-06T06:00:00+00:00", 1, "soon", None]),
            "end_time": st.sampled_from([None, "2012-03-06T05:00:00+00:00", True]),
            "severity": st.sampled_from(["MAJOR", "HUGE", 3]),
            "source": st.just("fuzz"),
        }
    ).map(orjson.dumps),
)


@SETTINGS
@given(st.lists(bad_values, max_size=15))
def test_generated_messages_never_stop_the_stream(values: list[bytes | None]) -> None:
    """Whatever precedes it, a good report is applied; every other message is either a
    usable incident or counted once under a reason."""
    consumer, book, changes = _incident_consumer()
    consumer._apply(_messages([*values, GOOD]), close=True)
    assert "ok" in {i.incident_id for i, _ in book.listing(T0)}
    assert consumer.bad_messages == sum(consumer.rejected().values())
    assert consumer.applied + consumer.bad_messages == len(values) + 1
    assert consumer.messages == len(values) + 1
    assert changes  # the service is told once per batch that changed something


def test_bad_records_are_counted_by_reason() -> None:
    consumer, book, _ = _incident_consumer()
    values = [
        b"",
        b"not json",
        orjson.dumps({"incident_id": "x"}),
        EventCodec(INCIDENT).encode(report("unknown", "zz")),
        EventCodec(INCIDENT).encode(report("backwards", end=T0 - timedelta(minutes=1))),
        GOOD,
    ]
    consumer._apply(_messages(values), close=False)
    assert consumer.rejected() == {
        "UNDECODABLE": 2,
        "MISSING_FIELD": 1,
        "UNKNOWN_SENSOR": 1,
        "OUT_OF_RANGE": 1,
    }
    assert [i.incident_id for i, _ in book.listing(T0)] == ["ok"]


def test_weather_outside_physics_is_refused_and_null_measurements_kept() -> None:
    board = WeatherBoard()
    consumer = weather_consumer("127.0.0.1:1", "w", board.apply)
    codec = EventCodec(WEATHER)
    base = {"station_id": "KLAX", "observed_at": T0, "source": "csv", "is_synthetic": False}
    consumer._apply(
        _messages(
            [
                codec.encode({**base, "visibility_km": float("nan")}),
                codec.encode({**base, "precipitation_mm": -1.0}),
                codec.encode({**base, "temperature_c": 18.5}),
            ]
        ),
        close=True,
    )
    assert consumer.rejected() == {"OUT_OF_RANGE": 2}
    (kept,) = board.latest()
    assert kept["temperature_c"] == 18.5 and kept["visibility_km"] is None


def test_a_forecast_names_at_most_the_five_nearest_incidents() -> None:
    book = IncidentBook(REACH)
    book.apply([report(f"far-{k}", "a") for k in range(7)] + [report("near", "b")])
    flags = book.flags(T0)
    assert [f["incident_id"] for f in flags["b"]] == ["near", *(f"far-{k}" for k in range(4))]
    assert len(flags["a"]) == 5
