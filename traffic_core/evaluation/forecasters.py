"""What the evaluation scores: a published version of either kind, as rows of forecasts.

A tree version forecasts from `traffic_core.features` rows, a neural version from the raw last
hour of every sensor. Both give one forecast per (issue time, sensor) on the grid that
`make_targets` builds for the version's sensors (time-major, sensors in the version's order),
so truth, baselines and scores take one path whatever the family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from traffic_core.features import FEATURE_NAMES, HORIZONS, make_features
from traffic_core.model_bundle import BundleError, ModelBundle
from traffic_core.models.neural import make_samples
from traffic_core.neural_bundle import NEURAL_META, NeuralBundle
from traffic_core.registry import ModelRegistry

NEURAL_CHUNK = 256
"""Moments per onnxruntime call: a day of 207 sensors in a few calls, bounded memory."""


class Forecaster(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def manifest(self) -> dict[str, Any]: ...

    @property
    def sensor_ids(self) -> list[str]: ...

    @property
    def half_widths(self) -> Mapping[int, float] | None:
        """Interval half-width per horizon (mph); None for a version without intervals."""

    @property
    def coverage(self) -> float | None: ...

    def forecast_rows(self, speeds: pd.DataFrame) -> tuple[pd.Series, dict[int, np.ndarray]]:
        """Issue time per row and the forecast per horizon (minutes) for every 5-minute step
        of `speeds`' span and every sensor of the version."""


@dataclass(frozen=True, eq=False)
class _Published:
    """What every published version answers alike: its name and manifest."""

    bundle: ModelBundle | NeuralBundle

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest


@dataclass(frozen=True, eq=False)
class TreeForecaster(_Published):
    bundle: ModelBundle

    @property
    def sensor_ids(self) -> list[str]:
        return list(self.bundle.context.sensor_ids)

    @property
    def half_widths(self) -> Mapping[int, float]:
        return self.bundle.half_widths

    @property
    def coverage(self) -> float:
        return self.bundle.coverage

    def forecast_rows(self, speeds: pd.DataFrame) -> tuple[pd.Series, dict[int, np.ndarray]]:
        features = make_features(speeds, self.bundle.context)
        return features["timestamp"], self.bundle.predict(features[list(FEATURE_NAMES)].to_numpy())


@dataclass(frozen=True, eq=False)
class NeuralForecaster(_Published):
    bundle: NeuralBundle

    @property
    def sensor_ids(self) -> list[str]:
        return self.bundle.sensor_ids

    @property
    def half_widths(self) -> None:
        return None  # the neural family publishes no intervals of its own

    @property
    def coverage(self) -> None:
        return None

    def forecast_rows(self, speeds: pd.DataFrame) -> tuple[pd.Series, dict[int, np.ndarray]]:
        samples = make_samples(speeds, self.sensor_ids)
        forecasts = np.concatenate(
            [
                self.bundle.predict(
                    samples.speeds[i : i + NEURAL_CHUNK], samples.clock[i : i + NEURAL_CHUNK]
                )
                for i in range(0, len(samples.stamps), NEURAL_CHUNK)
            ]
        )
        stamps = pd.Series(np.repeat(samples.stamps.to_numpy(), len(self.sensor_ids)))
        return stamps, {m: forecasts[:, i, :].ravel() for i, m in enumerate(HORIZONS)}


def load_forecaster(registry_root: Path, model: str) -> Forecaster:
    """The version `model` ("latest" or a version id) of the registry at `registry_root`,
    neural when it holds a neural graph, else a tree bundle; raises BundleError."""
    registry = ModelRegistry(registry_root)
    version = registry.latest() if model == "latest" else model
    if version is None:
        raise BundleError(f"no model published in {registry_root} yet")
    if (registry.path(version) / NEURAL_META).exists():
        return NeuralForecaster(NeuralBundle.load(registry, version))
    return TreeForecaster(ModelBundle.load(registry, version))
