"""The three model families the platform compares, each with a small hyper-parameter grid.

Grids are deliberately small and tree sizes modest: every configuration is cross-validated
over several forward-chaining folds on a 2-core machine, and served through ONNX at tens of
microseconds per row. Seeds are fixed so a retrain on the same rows gives the same model.
The tree families learn the change from the latest reading (`ResidualRegressor`): on 1-4 March
that cut a held-out 5 March's 60-minute MAE by 0.05-0.09 mph; ridge is linear, so it gains
nothing from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBRegressor

from traffic_core.features import FEATURE_NAMES
from traffic_core.models.residual import ResidualRegressor

SEED = 0
N_JOBS = 2

Params = Mapping[str, Any]

BASE_COLUMNS = tuple(FEATURE_NAMES.index(n) for n in ("speed_lag0", "mean_15min", "profile_now"))
"""What a change is forecast from: the latest reading, else the last 15 minutes' mean, else the
typical speed (a sensor silent for the whole hour)."""


@dataclass(frozen=True)
class Family:
    """A model family: `build(**params)` gives an unfitted estimator for one grid point."""

    name: str
    build: Callable[..., BaseEstimator]
    grid: tuple[Params, ...]


def _imputer() -> SimpleImputer:
    """Median imputation: missing readings are NaN by design, and neither Ridge nor the ONNX
    forest converter accepts NaN; add_indicator stays off so the ONNX graph stays plain."""
    return SimpleImputer(strategy="median", add_indicator=False)


def build_ridge(alpha: float = 1.0) -> Pipeline:
    """SVD rather than Cholesky: lags and rolling means are nearly collinear, so the float32
    normal equations are ill-conditioned at small alpha (a LinAlgWarning per fit, and a less
    accurate solve); SVD never forms them. Same out-of-fold MAE, ~0.3 s more per fit."""
    return Pipeline(
        [
            ("impute", _imputer()),
            ("scale", StandardScaler()),
            ("model", Ridge(alpha=alpha, solver="svd")),
        ]
    )


def build_forest(
    n_estimators: int = 40,
    max_depth: int | None = 12,
    min_samples_leaf: int = 20,
    max_features: float = 0.5,
    max_samples: float | None = 0.25,
) -> ResidualRegressor:
    """Bootstrap subsamples and a feature fraction keep fitting time and tree size bounded."""
    forest = RandomForestRegressor(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        max_samples=max_samples,
        n_jobs=N_JOBS,
        random_state=SEED,
    )
    return ResidualRegressor(Pipeline([("impute", _imputer()), ("model", forest)]), BASE_COLUMNS)


def build_xgboost(
    n_estimators: int = 300,
    max_depth: int = 6,
    learning_rate: float = 0.1,
    subsample: float = 0.8,
    colsample_bytree: float = 0.8,
    min_child_weight: float = 5.0,
) -> ResidualRegressor:
    """No imputer: XGBoost learns a default direction for NaN at every split."""
    booster = XGBRegressor(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        subsample=subsample,
        colsample_bytree=colsample_bytree,
        min_child_weight=min_child_weight,
        tree_method="hist",
        n_jobs=N_JOBS,
        random_state=SEED,
    )
    return ResidualRegressor(booster, BASE_COLUMNS)


FAMILIES: dict[str, Family] = {
    "ridge": Family("ridge", build_ridge, ({"alpha": 0.1}, {"alpha": 10.0}, {"alpha": 1000.0})),
    "random_forest": Family(
        "random_forest",
        build_forest,
        ({"max_depth": 10, "min_samples_leaf": 50}, {"max_depth": 14, "min_samples_leaf": 20}),
    ),
    "xgboost": Family(
        "xgboost",
        build_xgboost,
        (
            {"max_depth": 4, "n_estimators": 300},
            {"max_depth": 6, "n_estimators": 300, "learning_rate": 0.05},
        ),
    ),
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None
