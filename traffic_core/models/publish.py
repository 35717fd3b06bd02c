"""The write side of a model bundle (see traffic_core.model_bundle for what the API reads)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from traffic_core import features as f
from traffic_core.model_bundle import CONTEXT_FILE, INTERVALS_FILE, joblib_file, onnx_file
from traffic_core.models.export import save_joblib, to_onnx
from traffic_core.models.intervals import ConformalInterval
from traffic_core.models.mondrian import fit_regimes
from traffic_core.models.training import TrainedModel

INTERVAL_COVERAGE = 0.9


def write_bundle(
    folder: Path,
    best: Mapping[int, TrainedModel],
    context_file: Path,
    coverage: float = INTERVAL_COVERAGE,
) -> dict[str, dict]:
    """ONNX + joblib per horizon, split-conformal half-widths from each model's out-of-fold
    residuals (and, where the trainer kept each residual's observed speed, the per-regime
    Mondrian half-widths and residual quantiles of `traffic_core.predictive`), and the
    feature context the model was trained with. Returns the intervals without the quantiles,
    for the manifest's metrics."""
    intervals: dict[str, dict[str, Any]] = {}
    stored: dict[str, dict[str, Any]] = {}
    for minutes, model in best.items():
        (folder / onnx_file(minutes)).write_bytes(
            to_onnx(model.estimator, len(f.FEATURE_NAMES)).SerializeToString()
        )
        save_joblib(model.estimator, folder / joblib_file(minutes))
        interval = ConformalInterval.fit(model.residuals, coverage)
        intervals[str(minutes)] = {"coverage": coverage, "half_width_mph": interval.q}
        stored[str(minutes)] = dict(intervals[str(minutes)])
        if model.observed is not None:
            regimes = fit_regimes(model.residuals, model.observed, coverage).to_json()
            stored[str(minutes)]["regimes"] = regimes
            intervals[str(minutes)]["regime_half_width_mph"] = {
                regime: v["half_width_mph"] for regime, v in regimes["by_regime"].items()
            }
    shutil.copyfile(context_file, folder / CONTEXT_FILE)
    (folder / INTERVALS_FILE).write_text(json.dumps(stored, indent=2))
    return intervals
