"""PMML export: a clear error without sklearn2pmml or Java, or for an estimator class of our
own; with them, the ridge pipeline, a forest pipeline and XGBoost convert and (where the JPMML
evaluator is installed) score as the fitted model does."""

from __future__ import annotations

import shutil
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from xgboost import XGBRegressor

from traffic_core import features as f
from traffic_core.models import pmml
from traffic_core.models.candidates import build_ridge

PMML_NS = {"p": "http://www.dmg.org/PMML-4_4"}


def test_without_sklearn2pmml_the_error_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn2pmml", None)  # import fails
    with pytest.raises(pmml.PmmlUnavailable, match=pmml.REQUIREMENT):
        pmml.to_pmml(build_ridge(), tmp_path / "model.pmml")


def test_without_java_the_error_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    refuse = lambda *args, **kwargs: pytest.fail("converted without java")  # noqa: E731
    fake = types.SimpleNamespace(make_pmml_pipeline=refuse, sklearn2pmml=refuse)
    monkeypatch.setitem(sys.modules, "sklearn2pmml", fake)
    monkeypatch.setattr(pmml.shutil, "which", lambda name: None)
    with pytest.raises(pmml.PmmlUnavailable, match="no java on PATH"):
        pmml.to_pmml(build_ridge(), tmp_path / "model.pmml")


class Shifted(RegressorMixin, BaseEstimator):
    """An estimator class of our own: Java cannot unpickle it."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Shifted:
        return self


def test_an_estimator_class_of_our_own_is_refused_by_name(tmp_path: Path) -> None:
    model = Pipeline([("impute", SimpleImputer()), ("model", Shifted())])
    with pytest.raises(pmml.PmmlUnavailable, match=r"cannot convert tests?\S*Shifted"):
        pmml.to_pmml(model, tmp_path / "model.pmml")


def forest() -> Pipeline:
    model = RandomForestRegressor(n_estimators=5, max_depth=8, random_state=0)
    return Pipeline([("impute", SimpleImputer(strategy="median")), ("model", model)])


def booster() -> XGBRegressor:
    return XGBRegressor(n_estimators=20, max_depth=4, tree_method="hist", random_state=0)


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    """Feature-shaped rows with 10% missing values and a target the models can learn."""
    rng = np.random.default_rng(0)
    X = rng.normal(50, 10, size=(3000, len(f.FEATURE_NAMES))).astype("float32")
    y = 0.6 * np.nan_to_num(X[:, 0], nan=50.0) + 0.4 * X[:, -2] + rng.normal(0, 1, len(X))
    X[rng.random(X.shape) < 0.1] = np.nan
    return X, y


@pytest.mark.slow
@pytest.mark.parametrize(
    ("build", "model_element"),
    [(build_ridge, "RegressionModel"), (forest, "MiningModel"), (booster, "MiningModel")],
    ids=["ridge", "random_forest", "xgboost"],
)
def test_every_family_converts_with_named_inputs(
    build: type[BaseEstimator], model_element: str, rows: tuple, tmp_path: Path
) -> None:
    pytest.importorskip("sklearn2pmml")
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    X, y = rows
    model = build().fit(X, y)
    path = pmml.to_pmml(model, tmp_path / "model.pmml")

    root = ET.parse(path).getroot()
    fields = [d.get("name") for d in root.iterfind("p:DataDictionary/p:DataField", PMML_NS)]
    assert fields[0] == "speed_mph"  # then the inputs used, in feature order
    assert fields[1:] == [name for name in f.FEATURE_NAMES if name in fields]
    assert root.find(f".//p:{model_element}", PMML_NS) is not None

    evaluator = pytest.importorskip("jpmml_evaluator")
    scored = evaluator.make_evaluator(str(path), backend="py4j").verify()
    out = scored.evaluateAll(pd.DataFrame(X.astype("float64"), columns=list(f.FEATURE_NAMES)))
    np.testing.assert_allclose(out["speed_mph"].to_numpy(), model.predict(X), atol=1e-3)
