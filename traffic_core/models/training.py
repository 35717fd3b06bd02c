"""Hyper-parameter choice by forward-chaining CV on masked MAE, then a refit on all rows.

Rows must come in time order (the long feature frame's order), so every forward-chaining fold
trains on a prefix of the rows: the fold's estimator is fitted on a view, not a copy, and can
never see a row at or after its validation block's start minus the gap. `max_rows` samples
rows uniformly with a fixed seed (keeping time order), which bounds memory and time however
many months the caller passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from traffic_core.cv import forward_chaining_splits
from traffic_core.features import (
    FEATURE_NAMES,
    HORIZONS,
    LOOKBACK,
    FeatureContext,
    fit_profile,
    make_features,
    make_targets,
    on_grid,
)
from traffic_core.metrics import masked_mae
from traffic_core.models.candidates import Family, Params, get_family
from traffic_core.windows import WINDOW

LOCAL = "local"
SPARK = "spark"
OBSERVED_COLUMN = FEATURE_NAMES.index("speed_lag0")
"""The latest reading when a forecast is made: the feature its congestion regime comes from."""


@dataclass(eq=False)
class TrainedModel:
    """A refitted estimator and the evidence it was chosen on. `residuals` are the chosen
    configuration's out-of-fold errors (truth - forecast) on the validation blocks, the
    calibration set for split-conformal intervals; `observed` the last speed known when each
    of those forecasts was made (the Mondrian regime), None where the trainer did not say."""

    family: str
    params: dict[str, Any]
    estimator: BaseEstimator
    cv_mae: float
    cv_results: list[dict[str, Any]]
    residuals: np.ndarray = field(repr=False)
    n_train_rows: int
    refit_seconds: float
    engine: str = LOCAL
    """Where it was trained: `LOCAL` (one process) or `SPARK` (the cluster)."""
    observed: np.ndarray | None = field(default=None, repr=False)

    def predict(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Forecasts in mph (float64) from features cast to float32, as ONNX receives them."""
        return np.asarray(self.estimator.predict(_float32(X)), dtype="float64").ravel()


def crossfit_features(speeds: pd.DataFrame, context: FeatureContext) -> pd.DataFrame:
    """Training features (the `make_features` layout and rows) whose profile columns never saw
    the row's own day. A profile fitted on the training window holds each row's own future
    speed: on a few days each weekday slot is seen once, so profile_60min *is* the 60-minute
    target and a model learns to copy it (CV MAE near 0, test MAE no better than the
    historical average). Fitting it without the row's day reproduces what serving faces: a
    profile of other days. `context` gives sensors and graph; its profile is not used."""
    days = on_grid(speeds).index.normalize().unique()
    parts = []
    for day in days:
        others = fit_profile(speeds[speeds.index.normalize() != day])
        day_context = FeatureContext(context.sensor_ids, context.adjacency, others)
        window = speeds.loc[day - (LOOKBACK - 1) * WINDOW : day + pd.Timedelta("1D") - WINDOW]
        part = make_features(window, day_context)
        parts.append(part[part["timestamp"] >= day])
    return pd.concat(parts, ignore_index=True)


def grid_search(
    points: Sequence[Params],
    out_of_fold: Callable[[Params], np.ndarray],
    truth: np.ndarray,
) -> tuple[list[dict[str, Any]], int, np.ndarray]:
    """Score every grid point by the pooled masked MAE of its out-of-fold forecasts (in the
    order of `truth`); returns each point's result, the best index (first wins ties) and its
    forecasts. Any engine can supply `out_of_fold`, so all choose the same way."""
    results: list[dict[str, Any]] = []
    best: tuple[float, int, np.ndarray] | None = None
    for index, params in enumerate(points):
        oof = np.asarray(out_of_fold(params), dtype="float64")
        mae = masked_mae(truth, oof)
        results.append({"params": dict(params), "cv_mae": mae})
        if best is None or mae < best[0]:
            best = (mae, index, oof)
    if best is None:
        raise ValueError("empty hyper-parameter grid")
    return results, best[1], best[2]


def training_frame(speeds: pd.DataFrame, context: FeatureContext) -> pd.DataFrame:
    """Cross-fitted features (`crossfit_features`) and every horizon's target per row: what
    every engine trains on, in time order."""
    frame = crossfit_features(speeds, context)
    targets = make_targets(speeds, sensor_ids=context.sensor_ids)
    return frame.merge(targets, on=["timestamp", "sensor_id"], how="inner", validate="1:1")


def _float32(X: np.ndarray | pd.DataFrame) -> np.ndarray:
    """Plain float32 numpy: no feature names reach the estimator, as the ONNX export needs."""
    return np.ascontiguousarray(np.asarray(X, dtype="float32"))


def _prefix(positions: np.ndarray) -> slice:
    """Contiguous ascending positions as a slice, so fold data are views rather than copies."""
    start, stop = int(positions[0]), int(positions[-1]) + 1
    if stop - start != len(positions):
        raise ValueError("fold positions are not contiguous: are rows ordered by time?")
    return slice(start, stop)


def _training_rows(y: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """Positions with a valid target (not NaN, not the 0 mph missing marker), sampled down
    to `max_rows` without reordering."""
    rows = np.flatnonzero(~np.isnan(y) & (y != 0.0))
    if max_rows is not None and len(rows) > max_rows:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=max_rows, replace=False))
    return rows


def train_horizon(
    X: np.ndarray | pd.DataFrame,
    y: np.ndarray | pd.Series,
    timestamps: pd.Series | pd.DatetimeIndex | np.ndarray,
    family: Family | str,
    grid: Sequence[Params] | None = None,
    n_splits: int = 5,
    gap_steps: int = max(HORIZONS.values()),
    max_rows: int | None = None,
    seed: int = 0,
) -> TrainedModel:
    """Cross-validate every grid point (default: the family's grid) over forward-chaining
    folds, keep the lowest pooled out-of-fold masked MAE (first wins ties), refit it on all
    kept rows. Rows whose target is missing are dropped before anything else."""
    fam = get_family(family) if isinstance(family, str) else family
    points = list(fam.grid if grid is None else grid)
    if not points:
        raise ValueError("empty hyper-parameter grid")
    target = np.asarray(y, dtype="float64")
    stamps = pd.DatetimeIndex(timestamps)
    if not len(target) == len(stamps) == len(X):
        raise ValueError(f"X, y and timestamps differ in length: {len(X)}, {len(y)}, {len(stamps)}")
    rows = _training_rows(target, max_rows, seed)
    stamps = stamps[rows]
    if not stamps.is_monotonic_increasing:
        raise ValueError("rows must be ordered by timestamp")
    features = _float32(X.iloc[rows] if isinstance(X, pd.DataFrame) else np.asarray(X)[rows])
    target = target[rows]
    folds = [
        (_prefix(train), _prefix(val))
        for train, val in forward_chaining_splits(stamps, n_splits, gap_steps)
    ]
    val_rows = np.concatenate([np.arange(len(target))[val] for _, val in folds])

    def out_of_fold(params: Params) -> np.ndarray:
        return np.concatenate(
            [
                fam.build(**params).fit(features[train], target[train]).predict(features[val])
                for train, val in folds
            ]
        )

    results, index, oof = grid_search(points, out_of_fold, target[val_rows])
    mae = results[index]["cv_mae"]

    product_layout = features.shape[1] == len(FEATURE_NAMES)
    started = time.perf_counter()
    estimator = fam.build(**points[index]).fit(features, target)
    return TrainedModel(
        family=fam.name,
        params=dict(points[index]),
        estimator=estimator,
        cv_mae=mae,
        cv_results=results,
        residuals=target[val_rows] - oof,
        n_train_rows=len(target),
        refit_seconds=time.perf_counter() - started,
        observed=features[val_rows, OBSERVED_COLUMN] if product_layout else None,
    )


def select_best(results: Mapping[int, Iterable[TrainedModel]]) -> dict[int, TrainedModel]:
    """Per horizon, the candidate with the lowest CV masked MAE. Scores compare only when
    the candidates were cross-validated on the same rows, so differing row counts among the
    one-process candidates are an error; a candidate trained on the cluster saw every row
    (no sampling) of the same days and folds, and is compared as it is."""
    chosen: dict[int, TrainedModel] = {}
    for horizon, candidates in results.items():
        models = list(candidates)
        if not models:
            raise ValueError(f"no candidates for horizon {horizon}")
        if len({m.n_train_rows for m in models if m.engine == LOCAL}) > 1:
            raise ValueError(f"horizon {horizon}: candidates were trained on different rows")
        chosen[horizon] = min(models, key=lambda m: m.cv_mae)
    return chosen
