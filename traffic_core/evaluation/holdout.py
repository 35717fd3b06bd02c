"""A published model scored on held-out targets of a speed file, next to both baselines.

Forecasts are computed a day at a time, each day with the hour before it. They are row-local
(tests/traffic_core/test_features.py), so the numbers equal one pass over the whole file, while a
four-month file never sits in memory as one long frame. A tree model uses its saved feature
context (the profile of its own training window), a neural one the raw last hour
(`traffic_core.evaluation.forecasters`); the historical-average baseline is fitted
on the file's readings before a window's first scored target, never on what it scores.
Every forecaster is scored on the same points (`metrics.common_points`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from traffic_core.evaluation.forecasters import Forecaster
from traffic_core.evaluation.splits import TestWindow
from traffic_core.features import (
    HORIZONS,
    LOOKBACK,
    fit_profile,
    make_targets,
    target_column,
)
from traffic_core.metrics import (
    comparison_frame,
    evaluate_horizons,
    historical_average_forecast,
    persistence_forecast,
    valid_truth,
)
from traffic_core.models.intervals import coverage
from traffic_core.windows import WINDOW

MODEL, PERSISTENCE, HISTORICAL_AVERAGE = "model", "persistence", "historical_average"
FORECASTERS = (MODEL, PERSISTENCE, HISTORICAL_AVERAGE)
DAY = pd.Timedelta("1D")


@dataclass(eq=False)
class WindowScores:
    """One test window's scores: `scores` has a row per (horizon, forecaster) as
    `metrics.evaluate_horizons` gives it; `points` counts, per horizon, the valid ground
    truth and the points scored; `intervals` holds the model's measured interval coverage."""

    window: TestWindow
    profile_until: pd.Timestamp
    scores: pd.DataFrame
    points: dict[int, dict[str, int]]
    intervals: dict[int, dict[str, float]]


def baseline_profile(speeds: pd.DataFrame, window: TestWindow) -> pd.DataFrame:
    """The historical average's profile: readings strictly before the first scored target."""
    history = speeds.loc[: window.first_target - WINDOW]
    if history.empty:
        raise ValueError(
            f"no readings before {window.first_target} to fit the historical average on: "
            "the test window must start after the data does"
        )
    return fit_profile(history)


def _days(start: pd.Timestamp, end: pd.Timestamp) -> Iterator[tuple[pd.Timestamp, pd.Timestamp]]:
    """(first, last) issue time of each calendar day's share of start..end."""
    for day in pd.date_range(start.normalize(), end.normalize(), freq=DAY):
        yield max(day, start), min(day + DAY - WINDOW, end)


def _day_points(
    speeds: pd.DataFrame,
    first: pd.Timestamp,
    last: pd.Timestamp,
    forecaster: Forecaster,
    windows: Sequence[TestWindow],
    profiles: Sequence[pd.DataFrame],
) -> Iterator[tuple[int, int, pd.DataFrame]]:
    """(window index, minutes, frame of truth and forecasts) for the valid ground truth of the
    forecasts issued first..last that each window scores."""
    ids = forecaster.sensor_ids
    part = speeds.loc[first - (LOOKBACK - 1) * WINDOW : last + max(HORIZONS.values()) * WINDOW]
    stamps, forecasts = forecaster.forecast_rows(part)
    keep = ((stamps >= first) & (stamps <= last)).to_numpy()
    issued = stamps[keep]
    model = {minutes: values[keep] for minutes, values in forecasts.items()}
    targets = make_targets(part, sensor_ids=ids)[keep]
    persistence = persistence_forecast(part, sensor_ids=ids)[keep]
    for index, (window, profile) in enumerate(zip(windows, profiles, strict=True)):
        average = historical_average_forecast(part, profile, sensor_ids=ids)[keep]
        for minutes, steps in HORIZONS.items():
            column = target_column(steps)
            truth = targets[column].to_numpy()
            rows = window.scored(minutes, issued) & valid_truth(truth)
            yield (
                index,
                minutes,
                pd.DataFrame(
                    {
                        "truth": truth[rows],
                        MODEL: model[minutes][rows],
                        PERSISTENCE: persistence[column].to_numpy()[rows],
                        HISTORICAL_AVERAGE: average[column].to_numpy()[rows],
                    }
                ),
            )


def _window_scores(
    window: TestWindow,
    profile_until: pd.Timestamp,
    gathered: Mapping[int, Iterable[pd.DataFrame]],
    forecaster: Forecaster,
) -> WindowScores:
    parts, points, intervals = [], {}, {}
    for minutes in HORIZONS:
        frame = pd.concat(gathered[minutes], ignore_index=True)
        forecasts = {name: frame[name] for name in FORECASTERS}
        compared = comparison_frame(minutes, frame["truth"], forecasts)
        parts.append(compared)
        scored = compared[compared["model"] == MODEL]
        if scored.empty:
            raise ValueError(f"{window.description}: nothing to score at {minutes} minutes")
        points[minutes] = {"valid": len(frame), "scored": len(scored)}
        half_widths, nominal = forecaster.half_widths, forecaster.coverage
        if half_widths is None or nominal is None:
            continue  # a version without intervals
        half_width = half_widths[minutes]
        intervals[minutes] = {
            "nominal": nominal,
            "measured": coverage(
                scored["y_true"], scored["y_pred"] - half_width, scored["y_pred"] + half_width
            ),
            "half_width_mph": half_width,
        }
    return WindowScores(
        window=window,
        profile_until=profile_until,
        scores=evaluate_horizons(pd.concat(parts, ignore_index=True)),
        points=points,
        intervals=intervals,
    )


def score_bundle(
    speeds: pd.DataFrame, forecaster: Forecaster, windows: Sequence[TestWindow]
) -> list[WindowScores]:
    """The model, persistence and the historical average on each window's points of `speeds`
    (a loader's wide frame); forecasts are computed once for all windows."""
    if not set(forecaster.sensor_ids) & set(speeds.columns.astype(str)):
        raise ValueError(f"the data shares no sensor with model {forecaster.version}")
    profiles = [baseline_profile(speeds, w) for w in windows]
    gathered: list[dict[int, list[pd.DataFrame]]] = [{m: [] for m in HORIZONS} for _ in windows]
    start = max(min(w.first_issue for w in windows), speeds.index[0])
    end = min(max(w.issued_until for w in windows), speeds.index[-1])
    if start > end:
        raise ValueError(f"the data ends at {speeds.index[-1]}, before any forecast to score")
    for first, last in _days(start, end):
        for index, minutes, frame in _day_points(
            speeds, first, last, forecaster, windows, profiles
        ):
            gathered[index][minutes].append(frame)
    return [
        _window_scores(w, min(w.first_target - WINDOW, speeds.index[-1]), g, forecaster)
        for w, g in zip(windows, gathered, strict=True)
    ]


def training_days(manifest: Mapping[str, Any]) -> list[str]:
    """The days a published model learned from, as its manifest records them: the lake days
    of a pipeline model, `trained_on` of a quick one."""
    days = set(manifest.get("lake_partitions", []))
    for entry in manifest.get("metrics", {}).values():
        if isinstance(entry, Mapping):
            days.update(entry.get("trained_on", []))
    return sorted(days)


def leaked_days(manifest: Mapping[str, Any], window: TestWindow) -> list[str]:
    """Training days reaching the window's first scored target: scores there flatter the model."""
    return [d for d in training_days(manifest) if pd.Timestamp(d) + DAY > window.first_target]
