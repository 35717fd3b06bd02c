"""Only plausible forecasts leave the service: generated gap patterns over the real 6 March,
fed from an empty live state (warm-up), sometimes through a restart (a new service whose state
is rebuilt from the last windows, as from Kafka), into the real window-close path with a real
trained model. Every output is checked: one-sensor and batch bodies, history, pushes, the
records for `traffic-predictions` and `traffic-alerts`, and the alerts kept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from api_fixtures import real_speeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.alerts import AlertTracker
from serving.app import build_service
from serving.forecasting import ForecastSnapshot, mph
from serving.plausibility import (
    MAX_FORECAST_MPH,
    MIN_LAG_READINGS,
    bounded,
    input_gaps,
    plausible,
)
from serving.routes.forecasts import one_sensor_json
from serving.schemas import ForecastBatch, HorizonForecast, OneForecast, SensorHistory
from serving.service import ForecastService
from serving.settings import ApiSettings
from serving.streams import Broadcaster
from traffic_core.features import HORIZONS, LOOKBACK
from traffic_core.windows import DEFAULT_THRESHOLDS, WINDOW

DAY = pd.Timestamp("2012-03-06")
"""A day the model never saw (it is trained up to 5 March)."""
MIN_CASES = 10_000


class RecordingBroadcaster(Broadcaster):
    """Keeps every message the service pushes to WebSocket / SSE subscribers."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, kind: str, data: dict[str, Any] | bytes) -> None:
        self.messages.append((kind, data if isinstance(data, bytes) else orjson.dumps(data)))


@dataclass
class RecordingPublisher:
    """Stands in for the Kafka publisher: keeps the records it is asked to send."""

    predictions_topic: str = "traffic-predictions"
    alerts_topic: str = "traffic-alerts"
    settled: bool = True
    records: dict[str, list[bytes]] = field(default_factory=lambda: {})

    def send(self, topic: str, records: Any) -> None:
        self.records.setdefault(topic, []).extend(value for _key, value in records)


@dataclass
class Tally:
    served: int = 0
    withheld: int = 0
    alerts: int = 0
    reasons: set[str] = field(default_factory=set)

    def check(self, h: HorizonForecast) -> None:
        """One horizon: plausible, and null exactly when a reason says why."""
        assert plausible(h.speed_mph, h.lower_mph, h.upper_mph), h
        assert (h.speed_mph is None) == (h.reason is not None), h
        if h.reason is None:
            self.served += 1
        else:
            self.withheld += 1
            self.reasons.add(h.reason)
            assert h.congestion == "unknown", h


@pytest.fixture(scope="module")
def day(shared_data: Path) -> pd.DataFrame:
    speeds = real_speeds(shared_data).loc[DAY : DAY + pd.Timedelta("23:55:00")]
    return speeds.tz_localize("UTC")


@pytest.fixture(scope="module")
def api_settings(model_registry: Path) -> ApiSettings:
    return ApiSettings(live=False, publish=False, model_dir=model_registry, live_hours=2.0)


@pytest.fixture(scope="module")
def served(api_settings: ApiSettings) -> Iterator[ForecastService]:
    """A service whose model (holder) and graph the generated examples share."""
    svc = build_service(api_settings)
    assert svc.holder.refresh()
    yield svc


def fresh(template: ForecastService) -> ForecastService:
    """A service as started: an empty live state, no forecasts, no alert state."""
    svc = ForecastService(
        template.settings, template.graph, template.holder, RecordingBroadcaster()
    )
    svc.publisher = RecordingPublisher()  # type: ignore[assignment]
    return svc


@st.composite
def gap_patterns(draw: st.DrawFn, sensors: int) -> dict[str, Any]:
    """Where readings go missing: dropped at random (absent, null or 0 mph), whole sensors
    or windows out, and how many windows are fed before and after an optional restart."""
    before = draw(st.integers(1, 22))
    return {
        "start": draw(st.integers(0, 288 - 28)),
        "before": before,
        "after": draw(st.integers(0, 5)),
        "restart": draw(st.none() | st.integers(1, before)),
        "drop": draw(st.sampled_from([0.0, 0.05, 0.3, 0.6, 0.9, 1.0])),
        "missing_as": draw(st.sampled_from(["absent", "null", "zero"])),
        "outages": draw(
            st.lists(
                st.tuples(
                    st.integers(0, sensors - 1),
                    st.integers(1, sensors),
                    st.integers(0, 20),
                    st.integers(1, 21),
                ),
                max_size=3,
            )
        ),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def fed_frame(day: pd.DataFrame, pattern: dict[str, Any]) -> pd.DataFrame:
    """The windows the pattern feeds, NaN where a reading is missing (the day's own gaps too)."""
    count = pattern["before"] + pattern["after"]
    frame = day.iloc[pattern["start"] : pattern["start"] + count].copy()
    rng = np.random.default_rng(pattern["seed"])
    values = frame.to_numpy(copy=True)
    values[rng.random(values.shape) < pattern["drop"]] = np.nan
    for sensor, sensors, window, windows in pattern["outages"]:
        values[window : window + windows, sensor : sensor + sensors] = np.nan
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


def add(svc: ForecastService, frame: pd.DataFrame, missing_as: str, close: bool) -> list:
    """Every window of `frame` as one batch of readings, in time order."""
    closed = []
    for stamp, row in frame.iterrows():
        values = row.to_numpy(dtype="float64")
        keep = ~np.isnan(values) if missing_as == "absent" else np.ones(len(values), bool)
        if missing_as == "zero":
            values = np.nan_to_num(values, nan=0.0)
        if not keep.any():
            continue
        ms = np.full(int(keep.sum()), stamp.value // 1_000_000 + 1_000, dtype=np.int64)
        windows = svc.live.add(row.index.to_numpy()[keep], ms, values[keep], close=close)
        if close and windows:
            svc.on_close(windows)
            closed += windows
    return closed


def expected_reasons(held: pd.DataFrame, window: pd.Timestamp, reported: bool) -> np.ndarray:
    """The minimum-input rule, written out: per sensor its reason, None when it suffices.
    `held`: the windows the service was fed since it started; `reported`: whether a missing
    reading was still sent (null or 0 mph) rather than left out."""
    hour = held.reindex(pd.date_range(window - (LOOKBACK - 1) * WINDOW, window, freq=WINDOW))
    count = hour.notna().sum().to_numpy()
    current = hour.iloc[-1].notna().to_numpy()
    sent = held.index if reported else held.index[held.notna().any(axis=1)]
    warming_up = sent.min() > hour.index[0]
    return np.array(
        [
            "warming_up"
            if warming_up
            else "sensor_offline"
            if n == 0
            else "no_current_reading"
            if not now
            else "insufficient_history"
            if n < MIN_LAG_READINGS
            else None
            for n, now in zip(count, current, strict=True)
        ],
        dtype=object,
    )


def check_service(svc: ForecastService, held: pd.DataFrame, reported: bool, tally: Tally) -> None:
    """Every place the service's forecasts go."""
    snapshots: list[ForecastSnapshot] = list(svc._snapshots.values())
    for snapshot in snapshots:  # batch bodies, also what the history reads
        for forecast in ForecastBatch.model_validate_json(snapshot.batch_json(None)).forecasts:
            for h in forecast.horizons:
                tally.check(h)
    latest = svc.snapshot()
    expected = expected_reasons(held, latest.issued_for, reported)
    for i, sensor in enumerate(latest.sensor_ids):  # the one-sensor answers
        one = OneForecast.model_validate_json(one_sensor_json(svc, sensor))
        assert [h.reason for h in one.horizons] == [expected[i]] * 3, sensor
        for h in one.horizons:
            tally.check(h)
    for sensor in latest.sensor_ids[::23]:  # history of a spread of sensors
        history = SensorHistory.model_validate(svc.sensor_history(sensor, 2.0))
        for point in history.points:
            for h in point.forecasts.values():
                if h is not None:
                    tally.check(h)
    for kind, body in svc.broadcaster.messages:  # type: ignore[attr-defined]
        data = orjson.loads(body)
        if kind == "forecasts":
            for forecast in ForecastBatch.model_validate(data).forecasts:
                for h in forecast.horizons:
                    tally.check(h)
    records = svc.publisher.records  # type: ignore[union-attr]
    for body in records.get("traffic-predictions", []):
        for h in OneForecast.model_validate_json(body).horizons:
            tally.check(h)
    made = {s.issued_for: s for s in snapshots}
    alerts = [orjson.loads(body) for body in records.get("traffic-alerts", [])]
    assert len(alerts) == sum(kind == "alert" for kind, _ in svc.broadcaster.messages)  # type: ignore[attr-defined]
    for alert in [*alerts, *svc.alerts.recent]:
        speed = alert["forecast_speed_mph"]
        assert speed is not None and 0.0 <= speed <= MAX_FORECAST_MPH, alert
        source = made[pd.Timestamp(alert["raised_at"])]
        assert source.horizon(alert["sensor_id"], alert["horizon_minutes"])["reason"] is None
        tally.alerts += 1


def test_only_plausible_forecasts_go_anywhere(served: ForecastService, day: pd.DataFrame) -> None:
    tally = Tally()

    @settings(
        max_examples=40,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(pattern=gap_patterns(len(day.columns)))
    def example(pattern: dict[str, Any]) -> None:
        frame = fed_frame(day, pattern)
        reported = pattern["missing_as"] != "absent"
        before, after = frame.iloc[: pattern["before"]], frame.iloc[pattern["before"] :]
        svc = fresh(served)
        add(svc, before, pattern["missing_as"], close=True)
        held = before
        if pattern["restart"] is not None:  # a new process rebuilds from the last windows
            checked = svc if svc._latest is not None else None
            if checked is not None:
                check_service(checked, held, reported, tally)
            svc = fresh(served)
            held = before.iloc[-pattern["restart"] :]
            add(svc, held, pattern["missing_as"], close=False)
            svc.on_close(svc.live.close_due())
        add(svc, after, pattern["missing_as"], close=True)
        held = pd.concat([held, after])
        if svc._latest is not None:
            check_service(svc, held, reported, tally)

    example()
    assert tally.served >= MIN_CASES and tally.withheld >= MIN_CASES and tally.alerts, tally
    assert tally.reasons == {
        "warming_up",
        "sensor_offline",
        "no_current_reading",
        "insufficient_history",
    }


def test_the_rule_counts_missing_windows_and_readings() -> None:
    full = np.full((LOOKBACK, 4), 50.0)
    full[:, 1] = np.nan
    full[-1, 2] = np.nan
    full[: LOOKBACK - MIN_LAG_READINGS + 1, 3] = np.nan
    assert input_gaps(full).tolist() == [
        None,
        "sensor_offline",
        "no_current_reading",
        "insufficient_history",
    ]
    assert input_gaps(full[-3:]).tolist()[0] == "insufficient_history"  # 3 windows held
    assert set(input_gaps(full, warming_up=True)) == {"warming_up"}


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    points=hnp.arrays(np.float64, 50, elements=st.floats(allow_nan=True, allow_infinity=True)),
    half_width=st.floats(allow_nan=True, allow_infinity=True)
    | hnp.arrays(np.float64, 50, elements=st.floats(allow_nan=True, allow_infinity=True)),
    withheld=hnp.arrays(bool, 50),
)
def test_any_model_output_is_clipped_or_withheld(
    points: np.ndarray, half_width: float | np.ndarray, withheld: np.ndarray
) -> None:
    """Whatever a model answers (negative, beyond any road, NaN, infinite; any interval
    width, one for all sensors or one each), what is served keeps
    0 <= lower <= speed <= upper <= MAX_FORECAST_MPH."""
    gaps = np.where(withheld, "insufficient_history", None).astype(object)
    served = bounded(points, half_width, gaps)
    for i, raw in enumerate(points):
        speed, lower, upper = (mph(v[i]) for v in (served.speed, served.lower, served.upper))
        assert plausible(speed, lower, upper), (raw, half_width, speed, lower, upper)
        if withheld[i]:
            assert served.reasons[i] == "insufficient_history" and speed is None
        elif not np.isfinite(raw):
            assert served.reasons[i] == "model_output_invalid" and speed is None
        else:
            assert served.reasons[i] is None
            assert speed == mph(min(max(raw, 0.0), MAX_FORECAST_MPH))


def test_a_withheld_forecast_neither_raises_nor_clears_an_alert() -> None:
    tracker = AlertTracker(DEFAULT_THRESHOLDS, horizon_minutes=30)
    start = pd.Timestamp("2012-03-06 08:00", tz="UTC")

    def step(k: int, speed: float, withheld: bool) -> list[tuple[str, str]]:
        gaps = np.array(["insufficient_history" if withheld else None], dtype=object)
        snapshot = ForecastSnapshot(
            issued_for=start + k * WINDOW,
            model_version="v",
            synthetic=False,
            sensor_ids=("a",),
            observed=np.array([65.0]),
            forecasts={m: bounded(np.array([speed]), 5.0, gaps) for m in HORIZONS},
            coverage=0.9,
        )
        return [(a["kind"], a["to_congestion"]) for a in tracker.update(snapshot)]

    assert step(0, 65.0, False) == []  # first sight: free flow, as observed
    assert step(1, -88.0, True) == []  # withheld: would have raised "severe"
    assert step(2, 20.0, False) == [("raised", "severe")]
    assert step(3, 65.0, True) == []  # withheld: would have cleared
    assert step(4, 65.0, False) == [("cleared", "free_flow")]


def test_history_keeps_the_forecasts_made_when_the_window_closed(
    served: ForecastService, day: pd.DataFrame
) -> None:
    svc = fresh(served)
    add(svc, day.iloc[100:114], "null", close=True)
    window = svc.snapshot().issued_for
    made = svc._snapshots[window]
    svc.on_model(svc.holder.current)  # a model swap forecasts the newest window again
    assert svc.snapshot() is not made and svc.snapshot().issued_for == window
    assert svc._snapshots[window] is made
    assert list(svc._snapshots) == sorted(svc._snapshots)
