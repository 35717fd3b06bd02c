"""Dagster resources, configured from environment variables with working local defaults."""

from __future__ import annotations

from typing import Any

from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.spark import build_spark_resource
from traffic_core.settings import (
    KafkaSettings,
    PlatformSettings,
    SparkSettings,
)

__all__ = [
    "KafkaResource",
    "LakeResource",
    "ModelStoreResource",
    "build_resources",
]


def build_resources() -> dict[str, Any]:
    """All resources the definitions bind, read from the environment at load time."""
    platform = PlatformSettings()
    return {
        "kafka": KafkaResource(bootstrap_servers=KafkaSettings().bootstrap_servers),
        "lake": LakeResource(root=str(platform.lake_dir)),
        "model_store": ModelStoreResource(root=str(platform.model_dir)),
        "pyspark": build_spark_resource(SparkSettings()),
    }
