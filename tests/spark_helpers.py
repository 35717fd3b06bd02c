"""What the Spark tests share: a local-mode session configured as the platform configures it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from resources.spark import spark_config
from traffic_core.settings import SparkSettings


def local_spark() -> Iterator[SparkSession]:
    """A session on loopback with Arrow transfers, stopped when the generator closes (use as
    the body of a module-scoped fixture)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = SparkSession.builder.config(map=spark_config(SparkSettings())).getOrCreate()
        session.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        yield session
        session.stop()
