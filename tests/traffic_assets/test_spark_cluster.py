"""The aggregation asset on a standalone Spark cluster (master + two workers from the pyspark
wheel) gives the same day as local mode, really runs on both workers, and reads and writes a
lake given as a `file://` URL.

Ports follow the TRAFFIC_TEST_SLOT shift of conftest.py, so parallel sessions don't collide.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import materialize
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from spark_helpers import standalone_cluster

from infra.stack.process import ServiceError, wait_until
from infra.stack.serving import REAL_SIX_DAYS
from infra.stack.spark import SparkCluster
from resources.lake import LakeResource
from resources.spark import build_spark_resource
from traffic_assets.aggregation.assets import traffic_5min_aggregates
from traffic_core.datasets import load_speed_csv
from traffic_core.ingestion.raw_import import write_speeds_as_raw
from traffic_core.lake_storage import lake_path
from traffic_core.settings import SparkSettings
from traffic_core.windows import WINDOWS_PER_DAY

DAY = "2012-03-01"
APP_NAME = "metr-traffic"
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[SparkCluster]:
    yield from standalone_cluster(request)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The raw zone of the first real day (207 sensors x 288 readings)."""
    speeds = load_speed_csv(shared_data / "metr-la" / REAL_SIX_DAYS)
    root = tmp_path_factory.mktemp("cluster-lake")
    write_speeds_as_raw(root, speeds.loc[DAY], source="metr-la", is_synthetic=False)
    return root


@pytest.fixture(autouse=True)
def driver_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")


def materialize_day(lake_root: str, master: str) -> tuple[pd.DataFrame, SparkSession]:
    """Run the asset for DAY; returns what it wrote and the (still running) session it used."""
    resources = {
        "pyspark": build_spark_resource(SparkSettings(master=master)),
        "lake": LakeResource(root=lake_root),
    }
    result = materialize([traffic_5min_aggregates], partition_key=DAY, resources=resources)
    assert result.success
    session = SparkSession.getActiveSession()
    assert session is not None
    written = pd.read_parquet(LakeResource(root=lake_root).aggregates_file(DAY))
    return written, session


def app_ids_on_worker(cluster: SparkCluster, index: int) -> set[str]:
    state = cluster.worker_state(index) or {}
    executors = state.get("executors", []) + state.get("finishedexecutors", [])
    return {executor["appid"] for executor in executors}


def finished_app(cluster: SparkCluster, app_id: str) -> dict[str, Any] | None:
    apps = (cluster.master_state() or {}).get("completedapps", [])
    return next((app for app in apps if app["id"] == app_id), None)


@pytest.mark.slow
@pytest.mark.integration
def test_cluster_day_equals_local_mode_and_runs_on_both_workers(
    cluster: SparkCluster, lake: Path
) -> None:
    local, session = materialize_day(str(lake), "local[2]")
    assert session.sparkContext.master == "local[2]"
    session.stop()
    assert len(local) == WINDOWS_PER_DAY * 207

    cluster.wait_ready(timeout=120.0)
    assert cluster.alive_workers() == 2
    on_cluster, session = materialize_day(lake.as_uri(), cluster.master_url)
    context = session.sparkContext
    app_id = context.applicationId
    assert context.master == cluster.master_url
    pythons = {
        row.python
        for row in session.range(0, 4, numPartitions=4)
        .select(F.udf(lambda _: sys.executable)("id").alias("python"))
        .collect()
    }
    session.stop()

    pd.testing.assert_frame_equal(on_cluster, local, check_exact=False, rtol=0, atol=1e-9)
    assert pythons == {sys.executable}
    apps_by_worker = {i: app_ids_on_worker(cluster, i) for i in range(cluster.workers)}
    assert all(app_id in apps for apps in apps_by_worker.values()), (app_id, apps_by_worker)
    assert wait_until(lambda: finished_app(cluster, app_id) is not None, TIMEOUT), app_id
    app = finished_app(cluster, app_id)
    assert app is not None and app["name"] == APP_NAME and app["state"] == "FINISHED"


@pytest.mark.slow
@pytest.mark.integration
def test_cluster_refuses_a_taken_port(cluster: SparkCluster, tmp_path: Path) -> None:
    clash = SparkCluster(tmp_path / "spark", port=cluster.port, webui_port=cluster.webui_port + 50)
    with pytest.raises(ServiceError, match=f"port 127.0.0.1:{cluster.port} is already taken"):
        clash.start(timeout=10.0)
    assert not clash.running()


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match="Java not found"):
        SparkCluster(tmp_path / "spark").start(timeout=1.0)


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("/data/lake", "/data/lake"),
        ("relative/lake", "relative/lake"),
        ("file:///data/my%20lake", "/data/my lake"),
        ("file://localhost/data/lake", "/data/lake"),
        ("file:/data/lake", "/data/lake"),  # what pathlib makes of file:///data/lake
    ],
)
def test_lake_root_is_a_path_or_a_file_url(root: str, expected: str) -> None:
    assert lake_path(root) == Path(expected)


@pytest.mark.parametrize("root", ["s3a://bucket/lake", "file://otherhost/lake"])
def test_lake_root_elsewhere_is_refused(root: str) -> None:
    with pytest.raises(ValueError, match="lake root"):
        lake_path(root)
