"""ONNX export matches the native models on real features, missing readings (NaN) included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from traffic_core import features as f
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.models import FAMILIES, export, load_joblib, onnx_predict, save_joblib, to_onnx
from traffic_core.models.export import make_session

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
SMALL = {
    "ridge": {"alpha": 1.0},
    "random_forest": {"n_estimators": 10, "max_depth": 8},
    "xgboost": {"n_estimators": 60, "max_depth": 5},
}
"""Small fast models: parity depends on the converter, not on model size."""


@pytest.fixture(scope="module")
def real(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and 30-minute targets of 30 real sensors over 2 days."""
    speeds = load_speed_csv(shared_data / SIX_DAYS).loc[:"2012-03-02 23:55"]
    graph = load_metr_la_graph(shared_data / "metr-la")
    graph = graph.subgraph(list(graph.sensor_ids[:30]))
    context = f.FeatureContext.from_graph(graph, f.fit_profile(speeds))
    X = f.make_features(speeds, context)[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")
    y = f.make_targets(speeds, sensor_ids=context.sensor_ids)[f.target_column(6)].to_numpy()
    return X, y


@pytest.fixture(scope="module")
def rows(real: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """1,000 rows to compare on, some with missing features."""
    X, _ = real
    picked = np.random.default_rng(0).choice(len(X), size=1000, replace=False)
    assert np.isnan(X[picked]).any(axis=1).sum() >= 50
    return X[picked]


def _fit(family: str, real: tuple[np.ndarray, np.ndarray]) -> BaseEstimator:
    X, y = real
    keep = ~np.isnan(y)
    return FAMILIES[family].build(**SMALL[family]).fit(X[keep], y[keep])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_onnx_matches_native(
    family: str, real: tuple[np.ndarray, np.ndarray], rows: np.ndarray
) -> None:
    model = _fit(family, real)
    proto = to_onnx(model, rows.shape[1])
    native = np.asarray(model.predict(rows), dtype="float64")
    from_bytes = onnx_predict(proto.SerializeToString(), rows)
    from_session = onnx_predict(make_session(proto), rows)
    assert from_bytes.shape == native.shape == (1000,)
    assert np.isfinite(from_bytes).all()
    assert np.abs(from_bytes - native).max() <= 1e-3
    np.testing.assert_array_equal(from_bytes, from_session)


def test_xgboost_converter_registers_once(
    real: tuple[np.ndarray, np.ndarray], rows: np.ndarray
) -> None:
    model = _fit("xgboost", real)
    first = onnx_predict(to_onnx(model, rows.shape[1]), rows)
    assert export._xgboost_registered
    np.testing.assert_array_equal(onnx_predict(to_onnx(model, rows.shape[1]), rows), first)


def test_joblib_round_trip(
    tmp_path: Path, real: tuple[np.ndarray, np.ndarray], rows: np.ndarray
) -> None:
    model = _fit("xgboost", real)
    save_joblib(model, tmp_path / "model.joblib")
    restored = load_joblib(tmp_path / "model.joblib")
    np.testing.assert_array_equal(restored.predict(rows), model.predict(rows))
