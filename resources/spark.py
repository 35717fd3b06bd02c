"""Spark session configuration: local mode by default, any master via SPARK_MASTER."""

from __future__ import annotations

from dagster_pyspark import LazyPySparkResource

from traffic_core.settings import SparkSettings


def spark_config(settings: SparkSettings) -> dict[str, str]:
    """Spark options; loopback binding keeps local mode off the machine's other interfaces."""
    return {
        "spark.master": settings.master,
        "spark.app.name": "metr-traffic",
        "spark.driver.memory": settings.driver_memory,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }


def build_spark_resource(settings: SparkSettings | None = None) -> LazyPySparkResource:
    """Lazy, so loading the code location never starts a JVM."""
    return LazyPySparkResource(spark_config=spark_config(settings or SparkSettings()))
