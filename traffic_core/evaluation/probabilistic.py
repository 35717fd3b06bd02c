"""Scores of probabilistic forecasts: multi-class Brier score, reliability (calibration)
tables, and interval coverage within each congestion class."""

from __future__ import annotations

import numpy as np
import pandas as pd

from traffic_core.predictive import PROBABILITY_CLASSES


def one_hot(classes: np.ndarray) -> np.ndarray:
    """Rows of 0/1 in PROBABILITY_CLASSES order; a class outside them (unknown) is all 0."""
    labels = np.asarray(classes, dtype=object)
    return np.stack([labels == c for c in PROBABILITY_CLASSES], axis=-1).astype("float64")


def brier_score(probabilities: np.ndarray, outcomes: np.ndarray) -> float:
    """Mean over forecasts of sum over classes of (p - outcome)^2: 0 is perfect, 2 is a sure
    forecast of the wrong class. A one-hot `probabilities` scores a class forecast."""
    p = np.asarray(probabilities, dtype="float64")
    return float(((p - one_hot(outcomes)) ** 2).sum(axis=1).mean())


def reliability_table(
    probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10
) -> pd.DataFrame:
    """Per class and equal-width probability bin: forecasts in it, their mean probability and
    how often the class happened. A calibrated forecast has the two equal."""
    p = np.asarray(probabilities, dtype="float64")
    happened = one_hot(outcomes)
    index = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for k, name in enumerate(PROBABILITY_CLASSES):
        for b in range(bins):
            inside = index[:, k] == b
            if inside.any():
                rows.append(
                    {
                        "class": name,
                        "bin": b,
                        "forecasts": int(inside.sum()),
                        "mean_probability": float(p[inside, k].mean()),
                        "observed_rate": float(happened[inside, k].mean()),
                    }
                )
    return pd.DataFrame(rows)


def coverage_by_class(
    classes: np.ndarray, truth: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> dict[str, dict[str, float | int]]:
    """Share of truths inside [lower, upper] and the count, per class (NaN truth skipped)."""
    labels = np.asarray(classes, dtype=object)
    y = np.asarray(truth, dtype="float64")
    inside = (np.asarray(lower) <= y) & (y <= np.asarray(upper))
    out: dict[str, dict[str, float | int]] = {}
    for name in PROBABILITY_CLASSES:
        rows = (labels == name) & ~np.isnan(y)
        if rows.any():
            out[name] = {"coverage": float(inside[rows].mean()), "points": int(rows.sum())}
    return out
