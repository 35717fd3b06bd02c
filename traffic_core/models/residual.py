"""Forecast the change from the last reading, served as a level forecast in one ONNX graph.

Trees predict a level by averaging training targets in a leaf, so a 60-minute forecast is pulled
towards speeds seen elsewhere; learning `target - base`, base the latest reading, lets a leaf
say "about as now, minus 3 mph" for every speed at once. The base is the first column of
`base_columns` that is not NaN (0 when all are), identically in `predict` and in the ONNX
graph, so what the graph outputs is still the speed in mph: serving needs no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from skl2onnx import update_registered_converter
from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxGather, OnnxIsNaN, OnnxWhere
from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes
from sklearn.base import BaseEstimator, RegressorMixin, clone

from traffic_core.models.export import register_xgboost_converter


class ResidualRegressor(RegressorMixin, BaseEstimator):
    """`estimator` fitted on target - base; predicts base + its output."""

    def __init__(self, estimator: BaseEstimator, base_columns: Sequence[int] = (0,)) -> None:
        self.estimator = estimator
        self.base_columns = base_columns

    def base(self, X: np.ndarray) -> np.ndarray:
        values = np.asarray(X, dtype="float32")
        out = np.full(len(values), np.nan, dtype="float32")
        for column in self.base_columns:
            out = np.where(np.isnan(out), values[:, column], out)
        return np.nan_to_num(out, nan=0.0)

    def fit(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> ResidualRegressor:
        change = np.asarray(y, dtype="float64") - self.base(X)
        self.estimator_ = clone(self.estimator).fit(X, change, **fit_params)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        change = np.asarray(self.estimator_.predict(X), dtype="float32").ravel()
        return self.base(X) + change


def _convert(scope: Any, operator: Any, container: Any) -> None:
    """base (first non-NaN column, else 0) + the inner model's ONNX output, shape (rows, 1)."""
    from xgboost import XGBRegressor

    model: ResidualRegressor = operator.raw_operator
    if isinstance(model.estimator_, XGBRegressor):
        register_xgboost_converter()
    opv = container.target_opset
    features = operator.inputs[0]
    zero = np.zeros((1, 1), dtype="float32")
    base: Any = None
    for column in model.base_columns:
        value = OnnxGather(features, np.array([column], dtype="int64"), axis=1, op_version=opv)
        base = (
            value
            if base is None
            else OnnxWhere(OnnxIsNaN(base, op_version=opv), value, base, op_version=opv)
        )
    base = OnnxWhere(OnnxIsNaN(base, op_version=opv), zero, base, op_version=opv)
    change = OnnxSubEstimator(model.estimator_, features, op_version=opv)
    total = OnnxAdd(base, change, op_version=opv, output_names=operator.outputs[:1])
    total.add_to(scope, container)


update_registered_converter(
    ResidualRegressor,
    "TrafficResidualRegressor",
    calculate_linear_regressor_output_shapes,
    _convert,
)
