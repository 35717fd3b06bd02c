"""A published model version as the API serves it: one ONNX graph per horizon, the conformal
interval half-widths (and, from versions that have them, the per-regime Mondrian calibration
of `traffic_core.predictive`) and the feature context, checked against the manifest's sha256.

Reading a bundle needs only numpy, pandas and onnxruntime: the request path never imports
scikit-learn or XGBoost (the write side lives in traffic_core.models.publish).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from traffic_core.features import FEATURE_NAMES, FEATURE_VERSION, HORIZONS, FeatureContext
from traffic_core.predictive import RegimeDistribution
from traffic_core.registry import ModelRegistry

CONTEXT_FILE = "feature_context.npz"
INTERVALS_FILE = "intervals.json"


def onnx_file(minutes: int) -> str:
    return f"h{minutes}.onnx"


def joblib_file(minutes: int) -> str:
    return f"h{minutes}.joblib"


def inference_session(model: bytes | str | Path, threads: int = 1) -> ort.InferenceSession:
    """One intra-op thread: fastest per worker on 2 cores, and requests do not fight over it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class BundleError(ValueError):
    """A version cannot be served: files missing, altered, or built for other feature code."""


def verified_manifest(registry: ModelRegistry, version: str) -> dict[str, Any]:
    """The manifest once every artifact matches its sha256; BundleError otherwise."""
    try:
        return registry.verify(version)
    except (OSError, ValueError) as error:
        raise BundleError(f"model {version}: {error}") from error


@dataclass(frozen=True, eq=False)
class ModelBundle:
    version: str
    manifest: dict[str, Any]
    context: FeatureContext
    sessions: dict[int, ort.InferenceSession]
    half_widths: dict[int, float]
    coverage: float
    regimes: dict[int, RegimeDistribution] = field(default_factory=dict)
    """Per horizon, the Mondrian calibration; empty for versions published before it, which
    serve their split-conformal `half_widths` and no class probabilities."""

    @classmethod
    def load(cls, registry: ModelRegistry, version: str) -> ModelBundle:
        """Verify every artifact's sha256, then build the sessions; raises BundleError."""
        manifest = verified_manifest(registry, version)
        if manifest["feature_version"] != FEATURE_VERSION:
            raise BundleError(
                f"model {version} was trained on feature version {manifest['feature_version']},"
                f" this code computes version {FEATURE_VERSION}"
            )
        if list(manifest["feature_names"]) != list(FEATURE_NAMES):
            raise BundleError(f"model {version} expects other features than this code computes")
        folder = registry.path(version)
        intervals = json.loads((folder / INTERVALS_FILE).read_text())
        coverages = {float(v["coverage"]) for v in intervals.values()}
        if len(coverages) != 1:
            raise BundleError(f"model {version}: horizons disagree on coverage {coverages}")
        return cls(
            version=version,
            manifest=manifest,
            context=FeatureContext.load(folder / CONTEXT_FILE),
            sessions={m: inference_session(folder / onnx_file(m)) for m in HORIZONS},
            half_widths={m: float(intervals[str(m)]["half_width_mph"]) for m in HORIZONS},
            coverage=coverages.pop(),
            regimes={
                m: RegimeDistribution.from_json(
                    intervals[str(m)]["half_width_mph"], intervals[str(m)]["regimes"]
                )
                for m in HORIZONS
                if "regimes" in intervals[str(m)]
            },
        )

    def predict(self, features: np.ndarray) -> dict[int, np.ndarray]:
        """Point forecasts (float64 mph) per horizon for rows of FEATURE_NAMES values."""
        rows = np.ascontiguousarray(features, dtype="float32")
        out = {}
        for minutes, session in self.sessions.items():
            name = session.get_inputs()[0].name
            out[minutes] = np.asarray(session.run(None, {name: rows})[0], "float64").ravel()
        return out
