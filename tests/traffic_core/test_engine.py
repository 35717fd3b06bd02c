"""The engine rule, and a booster trained elsewhere served as the local family's model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic_core import features as f
from traffic_core.models import onnx_predict, to_onnx
from traffic_core.models.candidates import build_xgboost
from traffic_core.models.engine import choose_engine, residual_xgboost, xgboost_settings

PARAMS = {"max_depth": 3, "n_estimators": 20}


@settings(derandomize=True, deadline=None, max_examples=50)
@given(rows=st.integers(0, 10**10), threshold=st.integers(1, 10**10))
def test_auto_goes_to_the_cluster_from_the_threshold_on(rows: int, threshold: int) -> None:
    expected = "spark" if rows >= threshold else "local"
    assert choose_engine("auto", rows, threshold) == expected
    assert choose_engine("local", rows, threshold) == "local"
    assert choose_engine("spark", rows, threshold) == "spark"


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown training engine 'dask'"):
        choose_engine("dask", 10, 5)


def test_settings_are_the_local_familys_without_thread_counts() -> None:
    settings = xgboost_settings(PARAMS)
    assert "n_jobs" not in settings
    assert settings["max_depth"] == 3
    assert settings["random_state"] == 0
    assert settings["tree_method"] == "hist"


def test_a_booster_trained_elsewhere_forecasts_and_exports_as_the_family() -> None:
    """A booster fitted on the change under feature names (as xgboost.spark names them)
    becomes the family's model: same forecasts as the local one, and an ONNX graph."""
    rng = np.random.default_rng(0)
    X = rng.normal(60, 5, size=(2000, len(f.FEATURE_NAMES))).astype("float32")
    X[rng.random(X.shape) < 0.1] = np.nan
    y = np.nan_to_num(X[:, 0], nan=60.0) + rng.normal(0, 1, len(X))
    local = build_xgboost(**PARAMS).fit(X, y)
    elsewhere = build_xgboost(**PARAMS).estimator
    elsewhere.fit(X, y - local.base(X))
    elsewhere.get_booster().feature_names = list(f.FEATURE_NAMES)

    model = residual_xgboost(elsewhere, PARAMS)
    np.testing.assert_allclose(model.predict(X), local.predict(X), rtol=0, atol=1e-4)
    exported = to_onnx(model, len(f.FEATURE_NAMES)).SerializeToString()
    np.testing.assert_allclose(onnx_predict(exported, X), model.predict(X), rtol=0, atol=1e-3)
