"""The write side of a neural bundle (see traffic_core.neural_bundle for what a server reads).

A neural version goes to a registry root of its own: the tree models' API serves `latest` of
its root and refuses a version whose features differ from FEATURE_NAMES.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from traffic_core.features import CLOCK_NAMES, FEATURE_VERSION, HORIZONS, LOOKBACK
from traffic_core.models.neural import NeuralModel
from traffic_core.models.neural_onnx import CLOCK, SPEEDS, to_onnx
from traffic_core.neural_bundle import FAMILY, NEURAL_META, NEURAL_ONNX
from traffic_core.registry import frame_fingerprint


def neural_builder(
    model: NeuralModel,
    training_speeds: pd.DataFrame,
    lake_partitions: Sequence[str] = (),
    kafka_offsets: Sequence[dict[str, Any]] = (),
    ingest_ids: Sequence[dict[str, Any]] = (),
) -> Callable[[Path], dict[str, Any]]:
    """A `ModelRegistry.publish` builder: writes the ONNX graph and its metadata, and returns
    the manifest entries (metrics, inputs, lineage of the training window)."""

    def build(folder: Path) -> dict[str, Any]:
        onnx_model = to_onnx(model.params, model.statics(), len(model.sensor_ids))
        (folder / NEURAL_ONNX).write_bytes(onnx_model.SerializeToString())
        meta = {
            "family": FAMILY,
            "sensor_ids": model.sensor_ids,
            "lookback": LOOKBACK,
            "horizons": list(HORIZONS),
            "clock": list(CLOCK_NAMES),
            **model.describe(),
        }
        (folder / NEURAL_META).write_text(json.dumps(meta, indent=2))
        return {
            "metrics": {str(m): {"family": FAMILY, "cv_mae": model.cv_mae[m]} for m in HORIZONS},
            "feature_names": [SPEEDS, CLOCK],
            "feature_version": FEATURE_VERSION,
            "training_data_version": frame_fingerprint(training_speeds),
            "lake_partitions": list(lake_partitions),
            "kafka_offsets": list(kafka_offsets),
            "ingest_ids": list(ingest_ids),
        }

    return build
