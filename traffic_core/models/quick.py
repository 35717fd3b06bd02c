"""A model trained straight from a speed frame and published, without the Dagster pipeline:
the seed model `make demo` serves before the first retrain, and the model of the API's tests
and benchmarks. The pipeline's `best_model` remains the way production versions are made."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from traffic_core import features as f
from traffic_core.datasets import SensorGraph
from traffic_core.models.candidates import get_family
from traffic_core.models.publish import write_bundle
from traffic_core.models.training import crossfit_features, train_horizon
from traffic_core.registry import ModelRegistry, frame_fingerprint


def train_and_publish(
    registry_root: str | Path,
    speeds: pd.DataFrame,
    graph: SensorGraph,
    family: str = "ridge",
    params: Mapping[str, Any] | None = None,
    n_splits: int = 2,
    kafka_offsets: Sequence[Mapping[str, Any]] = (),
    code_version: str | None = None,
) -> str:
    """One `family` model per horizon at fixed `params` (default: the family's first grid
    point), intervals from its out-of-fold residuals; returns the published version. The
    lineage names the days trained on; `lake_partitions` stays empty because the frame did
    not come from the lake."""
    context = f.FeatureContext.from_graph(graph, f.fit_profile(speeds))
    frame = crossfit_features(speeds, context)
    targets = f.make_targets(speeds, sensor_ids=context.sensor_ids)
    X = frame[list(f.FEATURE_NAMES)].to_numpy()
    point = dict(params) if params is not None else dict(get_family(family).grid[0])
    best = {
        minutes: train_horizon(
            X,
            targets[f.target_column(steps)].to_numpy(),
            targets["timestamp"],
            family,
            [point],
            n_splits=n_splits,
        )
        for minutes, steps in f.HORIZONS.items()
    }

    def build(folder: Path) -> dict:
        with tempfile.TemporaryDirectory() as scratch:
            context_file = Path(scratch) / "context.npz"
            context.save(context_file)
            intervals = write_bundle(folder, best, context_file)
        return {
            "metrics": {
                str(m): {
                    "selected": model.family,
                    "cv_mae": {model.family: model.cv_mae},
                    "params": model.params,
                    "interval": intervals[str(m)],
                    "trained_on": sorted({str(d.date()) for d in speeds.index}),
                }
                for m, model in best.items()
            },
            "feature_names": list(f.FEATURE_NAMES),
            "feature_version": f.FEATURE_VERSION,
            "training_data_version": frame_fingerprint(speeds),
            "lake_partitions": [],
            "kafka_offsets": [dict(r) for r in kafka_offsets],
        }

    return ModelRegistry(registry_root).publish(build, code_version=code_version)
