"""A published neural-family version as a server runs it: one ONNX graph for every sensor and
horizon, verified against the manifest's sha256, run by onnxruntime alone.

Like `model_bundle`, reading needs only numpy, pandas and onnxruntime: no JAX, scikit-learn
or XGBoost on the request path. The graph takes the raw last hour (NaN = missing) and the
clock of the moment; `hour_window` builds both from a wide speed frame the same way for one
moment (live) as `traffic_core.models.neural.make_samples` does for every moment (batch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from traffic_core.features import CLOCK_NAMES, HORIZONS, LOOKBACK, clock_features, on_grid
from traffic_core.model_bundle import BundleError, inference_session, verified_manifest
from traffic_core.registry import ModelRegistry
from traffic_core.windows import WINDOW

NEURAL_ONNX = "neural.onnx"
NEURAL_META = "neural.json"
FAMILY = "graph_wavenet"


def hour_window(
    speeds: pd.DataFrame, sensor_ids: list[str], at: pd.Timestamp | str
) -> tuple[np.ndarray, np.ndarray]:
    """(1, LOOKBACK, sensors) float32 speeds of the hour ending at `at` (NaN where missing,
    absent or 0 mph) and its (1, len(CLOCK_NAMES)) clock."""
    moment = pd.Timestamp(at)
    if moment != moment.floor(WINDOW):
        raise ValueError(f"at={moment} is not a 5-minute window start")
    grid = on_grid(speeds, sensor_ids, moment - (LOOKBACK - 1) * WINDOW, moment)
    clock = clock_features(pd.DatetimeIndex([moment]))
    return grid.to_numpy(dtype="float32")[None], clock.astype("float32")


@dataclass(frozen=True, eq=False)
class NeuralBundle:
    version: str
    manifest: dict[str, Any]
    sensor_ids: list[str]
    session: ort.InferenceSession

    @classmethod
    def load(cls, registry: ModelRegistry, version: str) -> NeuralBundle:
        """Verify every artifact's sha256, then build the session; raises BundleError."""
        manifest = verified_manifest(registry, version)
        folder = registry.path(version)
        try:
            meta = json.loads((folder / NEURAL_META).read_text())
        except (OSError, ValueError) as error:
            raise BundleError(f"model {version} is not a neural bundle: {error}") from error
        expected = {
            "family": FAMILY,
            "lookback": LOOKBACK,
            "horizons": list(HORIZONS),
            "clock": list(CLOCK_NAMES),
        }
        differing = [k for k, v in expected.items() if meta.get(k) != v]
        if differing:
            raise BundleError(f"model {version}: built for other {differing} than this code")
        return cls(
            version=version,
            manifest=manifest,
            sensor_ids=[str(s) for s in meta["sensor_ids"]],
            session=inference_session(folder / NEURAL_ONNX),
        )

    def predict(self, speeds: np.ndarray, clock: np.ndarray) -> np.ndarray:
        """(samples, len(HORIZONS), sensors) mph, float64."""
        feeds = {
            "speeds": np.ascontiguousarray(speeds, dtype="float32"),
            "clock": np.ascontiguousarray(clock, dtype="float32"),
        }
        return np.asarray(self.session.run(None, feeds)[0], dtype="float64")

    def forecast(self, speeds: pd.DataFrame, at: pd.Timestamp | str) -> pd.DataFrame:
        """Every sensor's forecast (rows, in the bundle's sensor order) per horizon (columns,
        minutes) issued at `at` from the hour of `speeds` up to it."""
        window, clock = hour_window(speeds, self.sensor_ids, at)
        return pd.DataFrame(
            self.predict(window, clock)[0].T,
            index=pd.Index(self.sensor_ids, name="sensor_id"),
            columns=list(HORIZONS),
        )
