"""Calibrating the per-regime predictive distribution (`traffic_core.predictive`) on a
model's out-of-fold residuals, grouped by the congestion class observed at forecast time."""

from __future__ import annotations

import numpy as np

from traffic_core.models.intervals import ArrayLike, ConformalInterval
from traffic_core.predictive import QUANTILE_LEVELS, REGIMES, RegimeDistribution
from traffic_core.windows import DEFAULT_THRESHOLDS, CongestionThresholds

MIN_REGIME_ROWS = 200
"""Fewer calibration rows than this and a regime uses the marginal calibration: with 200 the
90% conformal quantile rests on the 20 largest errors, below that on a handful."""


def fit_regimes(
    residuals: ArrayLike,
    observed: ArrayLike,
    coverage: float,
    thresholds: CongestionThresholds = DEFAULT_THRESHOLDS,
    min_rows: int = MIN_REGIME_ROWS,
) -> RegimeDistribution:
    """Mondrian split-conformal: one conformal quantile of |residual| per regime (the class
    of `observed`, the last speed known when each forecast was made), plus each regime's
    residual quantiles for the class probabilities."""
    errors = np.asarray(residuals, dtype="float64")
    speeds = np.asarray(observed, dtype="float64")
    if errors.shape != speeds.shape:
        raise ValueError(f"residuals {errors.shape} and observed speeds {speeds.shape} differ")
    valid = ~np.isnan(errors)
    regimes = thresholds.classify(speeds)
    half_widths, quantiles = {}, {}
    for regime in REGIMES:
        rows = valid & (regimes == regime)
        if rows.sum() >= min_rows:
            half_widths[regime] = ConformalInterval.fit(errors[rows], coverage).q
            quantiles[regime] = np.quantile(errors[rows], QUANTILE_LEVELS)
    return RegimeDistribution(
        half_width=ConformalInterval.fit(errors, coverage).q,
        quantiles=np.quantile(errors[valid], QUANTILE_LEVELS),
        regime_half_widths=half_widths,
        regime_quantiles=quantiles,
        thresholds=thresholds,
    )
