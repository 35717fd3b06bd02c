"""The scores `python -m traffic_core.evaluation` must report, computed independently: one pass
over the whole file with `traffic_core.metrics`, from forecasts made outside the CLI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from traffic_core import features as f
from traffic_core import metrics as m
from traffic_core.models import coverage
from traffic_core.windows import WINDOW

FORECASTERS = ("model", "persistence", "historical_average")


def expected_scores(
    speeds: pd.DataFrame,
    sensor_ids: Sequence[str],
    forecasts: Mapping[int, np.ndarray],
    scored_from: dict[int, pd.Timestamp],
    half_widths: Mapping[int, float] | None = None,
    scored_until: pd.Timestamp | None = None,
) -> dict[int, dict[str, dict[str, Any]]]:
    """Per horizon and forecaster, the scores of traffic_core.metrics on the forecasts issued
    from `scored_from[minutes]` to `scored_until`; `forecasts` per horizon are aligned with
    `make_targets(speeds, sensor_ids=sensor_ids)`'s rows."""
    targets = f.make_targets(speeds, sensor_ids=sensor_ids)
    history = speeds.loc[: min(t + f.HORIZONS[h] * WINDOW for h, t in scored_from.items()) - WINDOW]
    baselines = {
        "persistence": m.persistence_forecast(speeds, sensor_ids=sensor_ids),
        "historical_average": m.historical_average_forecast(
            speeds, f.fit_profile(history), sensor_ids=sensor_ids
        ),
    }
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for minutes, steps in f.HORIZONS.items():
        column = f.target_column(steps)
        truth = targets[column].to_numpy()
        preds = {"model": np.asarray(forecasts[minutes])}
        preds |= {name: frame[column].to_numpy() for name, frame in baselines.items()}
        issued = targets["timestamp"]
        rows = (issued >= scored_from[minutes]) & (issued <= (scored_until or issued.max()))
        rows = rows.to_numpy() & ~np.isnan(truth)
        for pred in preds.values():
            rows &= ~np.isnan(pred)
        out[minutes] = {
            name: {
                "n": float(rows.sum()),
                "mae": m.masked_mae(truth[rows], pred[rows]),
                "rmse": m.masked_rmse(truth[rows], pred[rows]),
                "mape": m.masked_mape(truth[rows], pred[rows]),
                **m.congestion_scores(truth[rows], pred[rows]),
            }
            for name, pred in preds.items()
        }
        if half_widths is not None:
            q, model = half_widths[minutes], preds["model"][rows]
            out[minutes]["coverage"] = {"measured": coverage(truth[rows], model - q, model + q)}
    return out


def assert_scores_match(
    evaluation: dict[str, Any], expected: dict[int, dict[str, dict[str, Any]]]
) -> None:
    for minutes, by_name in expected.items():
        got = evaluation["scores"][str(minutes)]
        assert set(got) == set(FORECASTERS)
        for name in FORECASTERS:
            assert got[name] == pytest.approx(by_name[name], rel=1e-9), (minutes, name)
        if "coverage" in by_name:
            measured = evaluation["intervals"][str(minutes)]["measured"]
            assert measured == pytest.approx(by_name["coverage"]["measured"], rel=1e-12)
        else:
            assert str(minutes) not in evaluation["intervals"]
