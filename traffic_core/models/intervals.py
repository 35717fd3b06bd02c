"""Split-conformal prediction intervals from held-out absolute residuals.

The calibration residuals come from validation blocks the model never trained on (the
forward-chaining out-of-fold errors), so the finite-sample quantile gives marginal coverage
of at least the nominal level when the future behaves like the calibration period. Measured
coverage on a later test day is reported next to the nominal level, because traffic is not
exchangeable across days and the guarantee is only as good as that assumption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd

ArrayLike: TypeAlias = np.ndarray | pd.Series


@dataclass(frozen=True)
class ConformalInterval:
    """Symmetric interval forecast +- q, q being the conformal quantile of |residual|."""

    q: float
    nominal: float
    n_calibration: int

    @classmethod
    def fit(cls, residuals: ArrayLike, coverage: float = 0.9) -> ConformalInterval:
        """q = the ceil((n + 1) * coverage)-th smallest |residual| (capped at the largest)."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must lie in (0, 1), got {coverage}")
        scores = np.abs(np.asarray(residuals, dtype="float64"))
        scores = np.sort(scores[~np.isnan(scores)])
        if not len(scores):
            raise ValueError("no residuals to calibrate on")
        rank = min(math.ceil((len(scores) + 1) * coverage), len(scores))
        return cls(q=float(scores[rank - 1]), nominal=coverage, n_calibration=len(scores))

    def bounds(self, forecast: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        point = np.asarray(forecast, dtype="float64")
        return point - self.q, point + self.q


def coverage(y: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Share of valid ground truth (not NaN, not the 0 mph missing marker) inside [lo, hi]."""
    truth = np.asarray(y, dtype="float64")
    low, high = np.asarray(lo, dtype="float64"), np.asarray(hi, dtype="float64")
    valid = ~np.isnan(truth) & (truth != 0.0)
    if not valid.any():
        raise ValueError("no valid ground truth")
    inside = (low[valid] <= truth[valid]) & (truth[valid] <= high[valid])
    return float(inside.mean())
