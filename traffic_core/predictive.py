"""The predictive distribution of a forecast per congestion regime: Mondrian conformal
half-widths and the probability of each congestion class.

A regime is the congestion class of the sensor's last observed window when the forecast is
made. It is known at forecast time without asking the model, so the calibration rows and a
live forecast fall in a regime the same way; and the forecast error depends on it (a jam may
clear or deepen, free flow mostly stays), which is what makes one marginal interval too wide
in free flow and too narrow in congestion. Each regime keeps its own out-of-fold residuals
(truth - forecast): the conformal quantile of |residual| gives its interval, and the
residual quantiles, shifted by the point forecast, give the class probabilities.

Pure numpy, read by the API from the model bundle (`intervals.json`, key `regimes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from traffic_core.windows import (
    CONGESTED,
    DEFAULT_THRESHOLDS,
    FREE_FLOW,
    SEVERE,
    CongestionThresholds,
)

REGIMES = (SEVERE, CONGESTED, FREE_FLOW)
PROBABILITY_CLASSES = (SEVERE, CONGESTED, FREE_FLOW)
"""Column order of `class_probabilities`."""

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)
"""Levels at which a regime's residual distribution is stored (0 and 1: its extremes)."""


def class_probabilities(
    point: np.ndarray,
    residual_quantiles: np.ndarray,
    thresholds: CongestionThresholds = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """P(severe), P(congested), P(free flow) per forecast, columns in PROBABILITY_CLASSES
    order: speed = point + residual, the residual's CDF interpolated between its stored
    quantiles (levels QUANTILE_LEVELS). Rows sum to 1; NaN points give NaN rows."""
    speeds = np.asarray(point, dtype="float64")
    # np.interp needs increasing x: tied quantiles (a step in the CDF) are parted by 1e-9 mph
    stored = np.maximum.accumulate(np.asarray(residual_quantiles, dtype="float64"))
    quantiles = stored + np.arange(len(stored)) * 1e-9

    def below(limit: float) -> np.ndarray:
        # P(point + r < limit) = F(limit - point); np.interp is 0 / 1 beyond the extremes
        return np.interp(limit - speeds, quantiles, QUANTILE_LEVELS, left=0.0, right=1.0)

    severe = below(thresholds.severe_below)
    slower_than_free = np.maximum(below(thresholds.free_flow_from), severe)
    out = np.stack([severe, slower_than_free - severe, 1.0 - slower_than_free], axis=-1)
    out[np.isnan(speeds)] = np.nan
    return out


@dataclass(frozen=True)
class RegimeDistribution:
    """One horizon's per-regime calibration: the conformal half-width and residual quantiles
    of each regime that had enough calibration rows, and the marginal (split-conformal)
    half-width and quantiles for the others and for forecasts without a current reading."""

    half_width: float
    quantiles: np.ndarray
    regime_half_widths: Mapping[str, float]
    regime_quantiles: Mapping[str, np.ndarray]
    thresholds: CongestionThresholds = DEFAULT_THRESHOLDS
    """The classes the regimes were formed with at calibration."""

    def regimes(self, observed: np.ndarray) -> np.ndarray:
        return self.thresholds.classify(np.asarray(observed, dtype="float64"))

    def half_widths(self, observed: np.ndarray) -> np.ndarray:
        """Mondrian half-width per forecast from the regime of its last observed speed."""
        regimes = self.regimes(observed)
        out = np.full(len(regimes), self.half_width, dtype="float64")
        for regime, q in self.regime_half_widths.items():
            out[regimes == regime] = q
        return out

    def probabilities(
        self,
        point: np.ndarray,
        observed: np.ndarray,
        thresholds: CongestionThresholds = DEFAULT_THRESHOLDS,
    ) -> np.ndarray:
        """`class_probabilities` of each forecast with its regime's residual distribution."""
        speeds = np.asarray(point, dtype="float64")
        regimes = self.regimes(observed)
        out = class_probabilities(speeds, self.quantiles, thresholds)
        for regime, quantiles in self.regime_quantiles.items():
            rows = regimes == regime
            out[rows] = class_probabilities(speeds[rows], quantiles, thresholds)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "regime": "observed_congestion",
            "thresholds": {
                "severe_below": self.thresholds.severe_below,
                "free_flow_from": self.thresholds.free_flow_from,
            },
            "quantile_levels": len(QUANTILE_LEVELS),
            "residual_quantiles_mph": _rounded(self.quantiles),
            "by_regime": {
                regime: {
                    "half_width_mph": self.regime_half_widths[regime],
                    "residual_quantiles_mph": _rounded(self.regime_quantiles[regime]),
                }
                for regime in self.regime_half_widths
            },
        }

    @classmethod
    def from_json(cls, half_width: float, data: Mapping[str, Any]) -> RegimeDistribution:
        if int(data["quantile_levels"]) != len(QUANTILE_LEVELS):
            raise ValueError(f"expected {len(QUANTILE_LEVELS)} residual quantiles")
        by_regime = data["by_regime"]
        return cls(
            half_width=float(half_width),
            quantiles=np.asarray(data["residual_quantiles_mph"], dtype="float64"),
            regime_half_widths={r: float(v["half_width_mph"]) for r, v in by_regime.items()},
            regime_quantiles={
                r: np.asarray(v["residual_quantiles_mph"], dtype="float64")
                for r, v in by_regime.items()
            },
            thresholds=CongestionThresholds(**data["thresholds"]),
        )


def _rounded(values: np.ndarray) -> list[float]:
    """Residual quantiles to the 0.001 mph: exact enough, and a readable JSON file."""
    return [round(float(v), 3) for v in values]
