"""Forecast accuracy under the DCRNN protocol, and the two baselines every model must beat.

Ground truth of 0 mph or NaN is a missing reading, not a speed, so it is left out of every
score (DCRNN's mask). A forecast missing where ground truth exists is an error, not a point
to skip: all models of a comparison must be scored on the same points, so callers drop such
rows explicitly. RMSE is pooled over all valid points, not averaged per sensor.

Forecast frames share the layout of `features.make_targets` (timestamp, sensor_id,
target_<minutes>min ...), holding predictions instead of observed speeds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from traffic_core.features import (
    HORIZONS,
    LOOKBACK,
    long_frame,
    on_grid,
    profile_at,
    target_column,
)
from traffic_core.windows import (
    CONGESTED,
    DEFAULT_THRESHOLDS,
    FREE_FLOW,
    SEVERE,
    WINDOW,
    CongestionThresholds,
)

SCORE_COLUMNS = ["n", "mae", "rmse", "mape", "accuracy", "macro_f1"]


def _valid_pairs(
    y_true: np.ndarray | pd.Series, y_pred: np.ndarray | pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true, dtype="float64")
    pred = np.asarray(y_pred, dtype="float64")
    if truth.shape != pred.shape:
        raise ValueError(f"y_true has shape {truth.shape}, y_pred {pred.shape}")
    mask = ~np.isnan(truth) & (truth != 0.0)
    missing = int(np.isnan(pred[mask]).sum())
    if missing:
        raise ValueError(f"{missing} forecasts are NaN where ground truth exists")
    if not mask.any():
        raise ValueError("no valid ground truth to score")
    return truth[mask], pred[mask]


def masked_mae(y_true: np.ndarray | pd.Series, y_pred: np.ndarray | pd.Series) -> float:
    truth, pred = _valid_pairs(y_true, y_pred)
    return float(np.mean(np.abs(pred - truth)))


def masked_rmse(y_true: np.ndarray | pd.Series, y_pred: np.ndarray | pd.Series) -> float:
    truth, pred = _valid_pairs(y_true, y_pred)
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


def masked_mape(y_true: np.ndarray | pd.Series, y_pred: np.ndarray | pd.Series) -> float:
    """In percent."""
    truth, pred = _valid_pairs(y_true, y_pred)
    return float(np.mean(np.abs((pred - truth) / truth)) * 100.0)


def congestion_scores(
    y_true: np.ndarray | pd.Series,
    y_pred: np.ndarray | pd.Series,
    thresholds: CongestionThresholds = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Accuracy and macro-F1 of the severe / congested / free-flow classes of the speeds. A
    class absent from both truth and forecast is left out of the macro mean (zero_division=nan)
    rather than counted as F1 = 0; one that is missed or invented counts fully."""
    truth, pred = _valid_pairs(y_true, y_pred)
    true_class, pred_class = thresholds.classify(truth), thresholds.classify(pred)
    macro_f1 = f1_score(
        true_class,
        pred_class,
        labels=[SEVERE, CONGESTED, FREE_FLOW],
        average="macro",
        zero_division=np.nan,
    )
    return {
        "accuracy": float(accuracy_score(true_class, pred_class)),
        "macro_f1": float(macro_f1),
    }


def evaluate_horizons(
    frame: pd.DataFrame, thresholds: CongestionThresholds = DEFAULT_THRESHOLDS
) -> pd.DataFrame:
    """Tidy scores, one row per (horizon, model), from a long frame with columns model,
    horizon (minutes), y_true and y_pred."""
    rows = []
    for (horizon, model), group in frame.groupby(["horizon", "model"], sort=True):
        truth, pred = group["y_true"], group["y_pred"]
        rows.append(
            {
                "horizon": horizon,
                "model": model,
                "n": len(_valid_pairs(truth, pred)[0]),
                "mae": masked_mae(truth, pred),
                "rmse": masked_rmse(truth, pred),
                "mape": masked_mape(truth, pred),
                **congestion_scores(truth, pred, thresholds),
            }
        )
    return pd.DataFrame(rows, columns=["horizon", "model", *SCORE_COLUMNS])


def forecast_frame(
    targets: pd.DataFrame,
    forecasts: Mapping[str, pd.DataFrame],
    horizons: Mapping[int, int] = HORIZONS,
) -> pd.DataFrame:
    """The long input of `evaluate_horizons` from `make_targets` output and forecasts of the
    same layout (same rows in the same order), one per model name."""
    keys = ["timestamp", "sensor_id"]
    parts = []
    for model, forecast in forecasts.items():
        if not forecast[keys].equals(targets[keys]):
            raise ValueError(f"forecast {model!r} is not row-aligned with the targets")
        for minutes, steps in horizons.items():
            column = target_column(steps)
            parts.append(
                targets[keys].assign(
                    model=model,
                    horizon=minutes,
                    y_true=targets[column],
                    y_pred=forecast[column],
                )
            )
    return pd.concat(parts, ignore_index=True)


def metrics_by_horizon(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """`evaluate_horizons` output as the registry manifest nests it: horizon -> model -> score."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in table.itertuples(index=False):
        scores = {name: float(getattr(row, name)) for name in SCORE_COLUMNS}
        out.setdefault(str(row.horizon), {})[str(row.model)] = scores
    return out


def persistence_forecast(
    speeds: pd.DataFrame,
    horizons: Mapping[int, int] = HORIZONS,
    sensor_ids: list[str] | None = None,
    limit: int = LOOKBACK - 1,
) -> pd.DataFrame:
    """Every horizon gets the last speed observed at or before the issue time, carried over
    missing readings for at most `limit` steps (default: within the hour the API holds);
    NaN when the sensor was silent longer."""
    grid = on_grid(speeds, sensor_ids)
    last = grid.ffill(limit=limit).to_numpy()
    block = np.stack([last] * len(horizons))
    names = [target_column(s) for s in horizons.values()]
    return long_frame(pd.DatetimeIndex(grid.index), grid.columns, names, block)


def historical_average_forecast(
    speeds: pd.DataFrame,
    profile: pd.DataFrame,
    horizons: Mapping[int, int] = HORIZONS,
    sensor_ids: list[str] | None = None,
) -> pd.DataFrame:
    """The typical speed (`features.fit_profile` of the training window only) at the target
    time, ignoring the current readings; rows are those of `make_targets(speeds)`."""
    grid = on_grid(speeds, sensor_ids)
    profile = profile.set_axis(profile.columns.astype(str), axis=1).reindex(columns=grid.columns)
    stamps = pd.DatetimeIndex(grid.index)
    block = np.stack([profile_at(profile, stamps + s * WINDOW) for s in horizons.values()])
    names = [target_column(s) for s in horizons.values()]
    return long_frame(stamps, grid.columns, names, block)


def valid_truth(y_true: np.ndarray | pd.Series) -> np.ndarray:
    """Where ground truth is a speed (not NaN, not the 0 mph missing marker): the points a
    score may count, before any forecast is looked at."""
    truth = np.asarray(y_true, dtype="float64")
    return ~np.isnan(truth) & (truth != 0.0)


def common_points(
    y_true: np.ndarray | pd.Series, forecasts: Mapping[str, np.ndarray | pd.Series]
) -> np.ndarray:
    """Valid ground truth where every forecast exists: the points a fair comparison scores
    (persistence has no forecast after an hour of silence, the historical average none for a
    slot its profile never saw)."""
    mask = valid_truth(y_true)
    for values in forecasts.values():
        mask &= ~np.isnan(np.asarray(values, dtype="float64"))
    return mask


def comparison_frame(
    horizon: int,
    y_true: np.ndarray | pd.Series,
    forecasts: Mapping[str, np.ndarray | pd.Series],
) -> pd.DataFrame:
    """The input of `evaluate_horizons` for one horizon: every forecast on the `common_points`."""
    scored = common_points(y_true, forecasts)
    truth = np.asarray(y_true, dtype="float64")[scored]
    return pd.DataFrame(
        {
            "model": np.repeat(np.array(list(forecasts), dtype=object), len(truth)),
            "horizon": horizon,
            "y_true": np.tile(truth, len(forecasts)),
            "y_pred": np.concatenate(
                [np.asarray(v, dtype="float64")[scored] for v in forecasts.values()]
            ),
        }
    )
