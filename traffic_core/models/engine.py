"""Which engine trains a model, and the engine-independent side of training XGBoost elsewhere.

One process (`LOCAL`) trains every family on a sample of at most `max_rows` rows; above
`SparkSettings.training_min_rows` training rows the XGBoost family goes to the Spark cluster
(`SPARK`), which sees every row. Whatever trained the booster, it is wrapped here as the same
`ResidualRegressor` the local family builds, so export, intervals and serving stay one path.
"""

from __future__ import annotations

from typing import Any, Protocol

from xgboost import Booster, XGBRegressor

from traffic_core import features as f
from traffic_core.models.candidates import BASE_COLUMNS, Params, build_xgboost
from traffic_core.models.residual import ResidualRegressor
from traffic_core.models.training import LOCAL, SPARK

BASE_FEATURES = tuple(f.FEATURE_NAMES[i] for i in BASE_COLUMNS)
"""The features a change is forecast from, by name, in `ResidualRegressor`'s order."""

_PER_PROCESS = ("n_jobs", "nthread")
"""Thread counts: on a cluster each task uses its cores (`spark.task.cpus`)."""


class HasBooster(Protocol):
    """A trained XGBoost model of any engine (XGBRegressor, SparkXGBRegressorModel)."""

    def get_booster(self) -> Booster: ...


def choose_engine(requested: str, rows: int, spark_min_rows: int) -> str:
    """`requested` unless "auto"; then the cluster from `spark_min_rows` training rows on."""
    if requested == "auto":
        return SPARK if rows >= spark_min_rows else LOCAL
    if requested not in (LOCAL, SPARK):
        raise ValueError(f"unknown training engine {requested!r}; use auto, local or spark")
    return requested


def xgboost_settings(params: Params) -> dict[str, Any]:
    """The booster settings the local family uses for a grid point (seed, tree method,
    sampling), without per-process thread counts, for an XGBoost estimator elsewhere."""
    booster = build_xgboost(**params).estimator
    return {
        key: value
        for key, value in booster.get_params().items()
        if value is not None and key not in _PER_PROCESS
    }


def residual_xgboost(booster_model: HasBooster, params: Params) -> ResidualRegressor:
    """A fitted booster (trained on target - base) as the fitted `ResidualRegressor` the
    local family gives: a plain XGBRegressor holding the same trees, without feature names,
    as the ONNX exporter wants it."""
    model = build_xgboost(**params)
    inner = XGBRegressor(**model.estimator.get_params())
    inner.load_model(bytearray(booster_model.get_booster().save_raw("ubj")))
    inner.get_booster().feature_names = None
    inner.get_booster().feature_types = None
    model.estimator_ = inner
    return model
