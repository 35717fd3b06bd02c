"""Persistence and the historical average on the candidates' cross-validation rows.

A CV MAE means little alone; next to what no model achieves on the same rows it says how much
a model adds. The rows are those `train_horizon` validates on, chosen by its own row selection
and `forward_chaining_splits` with the same settings, in the same order (so their count equals
the length of every candidate's out-of-fold residuals). The historical average is the typical
speed at the target time from the profile of the other days: the row's profile_<h>min
feature, the information the candidates had (a profile fitted per fold would have nothing
for slots its few training hours never saw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traffic_core.cv import forward_chaining_splits
from traffic_core.features import HORIZONS, target_column
from traffic_core.metrics import comparison_frame, evaluate_horizons
from traffic_core.models.training import _training_rows

PERSISTENCE, HISTORICAL_AVERAGE = "persistence", "historical_average"


def profile_column(minutes: int) -> str:
    """The feature holding the historical-average forecast for `minutes` ahead."""
    return f"profile_{minutes}min"


def cv_validation_rows(
    y: np.ndarray | pd.Series,
    timestamps: pd.Series | pd.DatetimeIndex,
    n_splits: int,
    max_rows: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Positions of the rows `train_horizon(X, y, timestamps, ..., n_splits, max_rows=max_rows,
    seed=seed)` scores its out-of-fold forecasts on, in its order."""
    rows = _training_rows(np.asarray(y, dtype="float64"), max_rows, seed)
    folds = forward_chaining_splits(pd.DatetimeIndex(timestamps)[rows], n_splits)
    return rows[np.concatenate([val for _, val in folds])]


@dataclass(eq=False)
class CvBaselines:
    """`scores`: `metrics.evaluate_horizons` rows per (horizon, baseline), on the validation
    rows where both baselines have a forecast; `validation_rows`: how many rows the
    candidates were scored on, per horizon."""

    scores: pd.DataFrame
    validation_rows: dict[int, int]

    def mae(self, minutes: int) -> dict[str, float]:
        rows = self.scores[self.scores["horizon"] == minutes]
        return {str(r.model): float(r.mae) for r in rows.itertuples(index=False)}


def cv_baselines(
    frame: pd.DataFrame,
    persistence: pd.DataFrame,
    n_splits: int,
    max_rows: int | None = None,
) -> CvBaselines:
    """Both baselines per horizon on the CV validation rows of `frame` (the training frame:
    timestamp, profile_<h>min features and target_<h>min columns, in time order);
    `persistence` is `metrics.persistence_forecast` row-aligned with it."""
    if len(persistence) != len(frame):
        raise ValueError(f"{len(persistence)} persistence rows for {len(frame)} training rows")
    parts, counts = [], {}
    for minutes, steps in HORIZONS.items():
        column = target_column(steps)
        rows = cv_validation_rows(frame[column], frame["timestamp"], n_splits, max_rows)
        forecasts = {
            PERSISTENCE: persistence[column].to_numpy()[rows],
            HISTORICAL_AVERAGE: frame[profile_column(minutes)].to_numpy()[rows],
        }
        parts.append(comparison_frame(minutes, frame[column].to_numpy()[rows], forecasts))
        counts[minutes] = len(rows)
    return CvBaselines(evaluate_horizons(pd.concat(parts, ignore_index=True)), counts)
