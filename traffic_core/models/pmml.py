"""PMML export of fitted forecast models, for scoring engines that read PMML (JPMML and others).

sklearn2pmml converts with a Java program (JPMML-SkLearn, Java 11+ on PATH), so it is imported
on first use and stays optional: serving reads ONNX. It converts scikit-learn pipelines (the
ridge and forest families, with their median imputer and scaler) and XGBRegressor (with its
learned direction for missing values) as they are, but no estimator class of our own, which
Java cannot unpickle. Our estimators are fitted on plain float32 arrays without feature names
(as the ONNX export needs), so the PMML pipeline is told the input names.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from traffic_core.features import FEATURE_NAMES

REQUIREMENT = "sklearn2pmml==0.133.1"
"""The version tested; it bundles the JPMML-SkLearn jars (AGPL-3.0)."""

CONVERTIBLE_LIBRARIES = ("sklearn", "xgboost")


class PmmlUnavailable(RuntimeError):
    """sklearn2pmml or Java is not installed, or the model is not one it can convert."""


def _estimators(model: BaseEstimator) -> Iterator[BaseEstimator]:
    yield model
    if isinstance(model, Pipeline):
        for _, step in model.steps:
            yield from _estimators(step)


def _check_convertible(model: BaseEstimator) -> None:
    foreign = [
        f"{type(e).__module__}.{type(e).__name__}"
        for e in _estimators(model)
        if type(e).__module__.split(".")[0] not in CONVERTIBLE_LIBRARIES
    ]
    if foreign:
        raise PmmlUnavailable(f"sklearn2pmml cannot convert {', '.join(foreign)}")


def to_pmml(
    model: BaseEstimator,
    path: str | os.PathLike[str],
    feature_names: Sequence[str] = FEATURE_NAMES,
    target_name: str = "speed_mph",
) -> Path:
    """Write a fitted scikit-learn pipeline or XGBRegressor as a PMML file; inputs are named
    `feature_names` (NaN is a missing value), the prediction `target_name`."""
    _check_convertible(model)
    try:
        from sklearn2pmml import make_pmml_pipeline, sklearn2pmml
    except ImportError as error:
        raise PmmlUnavailable(
            f"PMML export needs {REQUIREMENT} (and Java 11+ on PATH); it is not installed"
        ) from error
    if shutil.which("java") is None:
        raise PmmlUnavailable("PMML export runs sklearn2pmml's Java converter: no java on PATH")
    pipeline = make_pmml_pipeline(
        model, active_fields=list(feature_names), target_fields=[target_name]
    )
    sklearn2pmml(pipeline, os.fspath(path))
    return Path(path)
