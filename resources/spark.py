"""Spark session configuration: local mode by default, any master via SPARK_MASTER."""

from __future__ import annotations

import os

from dagster import InitResourceContext
from dagster_pyspark import LazyPySparkResource

from traffic_core.settings import SparkSettings


def spark_config(settings: SparkSettings) -> dict[str, str]:
    """Spark options that hold for local mode and a `spark://` cluster alike.

    The driver binds loopback and executors reach it there; executor size applies only on a
    cluster (local mode runs tasks in the driver).
    """
    return {
        "spark.master": settings.master,
        "spark.app.name": "metr-traffic",
        "spark.driver.memory": settings.driver_memory,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.executor.memory": settings.executor_memory,
        "spark.executor.cores": str(settings.executor_cores),
        "spark.pyspark.python": settings.python,
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }


def export_python_for_executors(config: dict[str, str]) -> None:
    """pyspark takes the executors' Python from PYSPARK_PYTHON in the driver's environment, not
    from `spark.pyspark.python` (only spark-submit maps one to the other)."""
    python = config.get("spark.pyspark.python")
    if python:
        os.environ["PYSPARK_PYTHON"] = python


class SparkResource(LazyPySparkResource):
    """LazyPySparkResource whose executors run the configured Python, on any master."""

    def setup_for_execution(self, context: InitResourceContext) -> None:
        export_python_for_executors(self.spark_config)


def build_spark_resource(settings: SparkSettings | None = None) -> SparkResource:
    """Lazy, so loading the code location never starts a JVM."""
    return SparkResource(spark_config=spark_config(settings or SparkSettings()))
