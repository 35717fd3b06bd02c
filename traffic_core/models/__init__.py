"""Forecast models: candidate families, time-aware training, conformal intervals, export."""

from traffic_core.models.candidates import FAMILIES, Family, get_family
from traffic_core.models.export import load_joblib, onnx_predict, save_joblib, to_onnx
from traffic_core.models.intervals import ConformalInterval, coverage
from traffic_core.models.training import (
    TrainedModel,
    crossfit_features,
    select_best,
    train_horizon,
    training_frame,
)

__all__ = [
    "FAMILIES",
    "ConformalInterval",
    "Family",
    "TrainedModel",
    "coverage",
    "crossfit_features",
    "get_family",
    "load_joblib",
    "onnx_predict",
    "save_joblib",
    "select_best",
    "to_onnx",
    "train_horizon",
    "training_frame",
]
