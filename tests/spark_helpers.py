"""What the Spark tests share: a local-mode session configured as the platform configures it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import PORT_SHIFT, TEST_STATE
from pyspark.sql import SparkSession

from infra.stack.spark import SparkCluster
from resources.spark import spark_config
from traffic_core.datasets import to_long
from traffic_core.lake import aggregates_file
from traffic_core.settings import SparkSettings
from traffic_core.windows import aggregate_windows


def local_spark() -> Iterator[SparkSession]:
    """A session on loopback with Arrow transfers, stopped when the generator closes (use as
    the body of a module-scoped fixture)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = SparkSession.builder.config(map=spark_config(SparkSettings())).getOrCreate()
        session.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        yield session
        session.stop()


def slot_cluster() -> SparkCluster:
    """The standalone cluster (master + two workers) of this test slot's ports and state."""
    return SparkCluster(
        state_dir=TEST_STATE / "spark", port=17077 + PORT_SHIFT, webui_port=18080 + PORT_SHIFT
    )


def standalone_cluster(request: pytest.FixtureRequest) -> Iterator[SparkCluster]:
    """Launch the slot's cluster (after stopping one a killed session left running), stop it
    when the generator closes (use as the body of a module-scoped fixture)."""
    slot_cluster().stop()  # its pids are in TEST_STATE, which the session fixture wipes
    request.getfixturevalue("test_state_dir")
    cluster = slot_cluster()
    cluster.launch(timeout=120.0)  # workers register while the caller does other work
    yield cluster
    cluster.stop()


def write_aggregates(root: Path, speeds: pd.DataFrame, days: list[str]) -> None:
    """The 5-minute aggregates of a wide speed frame's `days` in a lake at `root`, computed
    by the core rules and laid out as the Spark aggregation writes them."""
    for day in days:
        readings = to_long(speeds.loc[day]).rename(columns={"timestamp": "event_time"})
        readings["event_time"] = readings["event_time"].dt.tz_localize("UTC")
        path = aggregates_file(root, day)
        path.parent.mkdir(parents=True)
        aggregates = aggregate_windows(readings)
        # microseconds, as Spark writes them (Spark cannot read nanosecond timestamps)
        aggregates["window_start"] = aggregates["window_start"].astype("datetime64[us, UTC]")
        aggregates.to_parquet(path, index=False)
