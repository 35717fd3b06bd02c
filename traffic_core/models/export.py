"""Model export: ONNX for serving (onnxruntime, one thread per worker) and joblib for Python.

XGBoost needs onnxmltools' converter registered with skl2onnx; it is registered on first use
so importing this module stays cheap. onnxmltools 1.14 cannot parse xgboost 3's base_score,
which the booster config now writes as a one-element vector ("[5E1]"); the registered
converter hands it a view of the model whose config carries the scalar instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

import joblib
import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import BaseEstimator
from xgboost import Booster, XGBRegressor

from traffic_core.model_bundle import inference_session

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "features"

_xgboost_registered = False


class _Booster:
    """A booster whose save_config writes base_score as a scalar; all else is delegated."""

    def __init__(self, booster: Booster) -> None:
        self._booster = booster

    def save_config(self) -> str:
        config = json.loads(self._booster.save_config())
        params = config["learner"]["learner_model_param"]
        score = str(params.get("base_score", ""))
        if score.startswith("[") and score.endswith("]"):
            values = score[1:-1].split(",")
            if len(values) != 1:
                raise ValueError(f"cannot export a multi-target base_score {score}")
            params["base_score"] = values[0]
        return json.dumps(config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._booster, name)


class _Regressor(XGBRegressor):
    """The XGBRegressor as onnxmltools reads it (its __dict__ too), with the scalar-base_score
    booster; built from a fitted model's state, never fitted itself."""

    @classmethod
    def of(cls, model: XGBRegressor) -> _Regressor:
        view = cls.__new__(cls)
        view.__dict__.update(model.__dict__)
        return view

    def get_booster(self) -> Any:
        return _Booster(super().get_booster())


def register_xgboost_converter() -> None:
    """Teach skl2onnx XGBRegressor (through onnxmltools), once per process."""
    global _xgboost_registered
    if _xgboost_registered:
        return
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes

    def convert(scope: Any, operator: Any, container: Any) -> None:
        operator.raw_operator = _Regressor.of(operator.raw_operator)
        convert_xgboost(scope, operator, container)

    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert
    )
    _xgboost_registered = True


def to_onnx(model: BaseEstimator, n_features: int) -> onnx.ModelProto:
    """A fitted ridge / forest pipeline or XGBRegressor as ONNX: float32 input `features`
    of shape (rows, n_features), NaN allowed, one float32 output per row."""
    if isinstance(model, XGBRegressor):
        register_xgboost_converter()
    return convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
    )


def make_session(model: onnx.ModelProto | bytes, threads: int = 1) -> ort.InferenceSession:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return inference_session(data, threads)


def onnx_predict(
    model: ort.InferenceSession | onnx.ModelProto | bytes, X: np.ndarray
) -> np.ndarray:
    """Forecasts (float64, one per row) from a session or a serialized model."""
    session = model if isinstance(model, ort.InferenceSession) else make_session(model)
    name = session.get_inputs()[0].name
    features = np.ascontiguousarray(np.asarray(X, dtype="float32"))
    return np.asarray(session.run(None, {name: features})[0], dtype="float64").ravel()


def save_joblib(model: BaseEstimator, path: str | os.PathLike[str]) -> None:
    """Pickled estimator for Python consumers; loading it runs code, so trust the source."""
    joblib.dump(model, path)


def load_joblib(path: str | os.PathLike[str]) -> BaseEstimator:
    return joblib.load(path)
