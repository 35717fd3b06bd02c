"""Definitions load, and assets materialize on the project's own instance configurations:
the SQLite default and PostgreSQL (a real server started by the tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize
from dagster._core.storage.runs import SqliteRunStorage
from dagster_postgres import PostgresRunStorage

from code_location.definitions import defs
from infra.stack.dagster import prepare_home
from infra.stack.postgres import PostgresServer
from resources import LakeResource
from resources.network import NetworkResource
from traffic_assets.reference.sensor_graph import sensor_graph
from traffic_core.settings import REPO_ROOT


def materialize_sensor_graph(instance: DagsterInstance, lake_root: Path) -> None:
    result = materialize(
        [sensor_graph],
        instance=instance,
        resources={"lake": LakeResource(root=str(lake_root)), "network": NetworkResource()},
    )
    assert result.success
    table = pd.read_parquet(lake_root / "reference" / "metr-la" / "sensors.parquet")
    assert len(table) == 207
    assert table["sensor_id"].iloc[0] == "773869"
    event = instance.get_latest_materialization_event(sensor_graph.key)
    assert event is not None
    assert event.asset_materialization.metadata["dagster/row_count"].value == 207


def test_definitions_load_with_every_resource() -> None:
    repository = defs.get_repository_def()
    assert sensor_graph.key in repository.asset_graph.get_all_asset_keys()
    assert {"kafka", "lake", "model_store", "pyspark"} <= set(repository.get_top_level_resources())


def test_dagster_definitions_validate_cli() -> None:
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_materialize_on_default_sqlite_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path
) -> None:
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_URL"):
        monkeypatch.delenv(name, raising=False)
    home = prepare_home(tmp_path / "home", env={})
    instance = DagsterInstance.from_config(str(home))
    assert isinstance(instance.run_storage, SqliteRunStorage)
    materialize_sensor_graph(instance, tmp_path / "lake")
    instance.dispose()


@pytest.mark.integration
def test_materialize_on_postgres_instance(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,
    shared_data: Path,
) -> None:
    env = {
        "DAGSTER_PG_HOST": postgres_server.host,
        "DAGSTER_PG_PORT": str(postgres_server.port),
        "DAGSTER_PG_USERNAME": postgres_server.username,
        "DAGSTER_PG_PASSWORD": postgres_server.password,
        "DAGSTER_PG_DB": postgres_server.database,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    home = prepare_home(tmp_path / "home", env=env)
    instance = DagsterInstance.from_config(str(home))
    assert isinstance(instance.run_storage, PostgresRunStorage)
    materialize_sensor_graph(instance, tmp_path / "lake")
    run_ids = {run.run_id for run in instance.get_runs()}
    instance.dispose()

    # A second instance on the same database sees the run: it lives in PostgreSQL.
    reopened = DagsterInstance.from_config(str(home))
    assert run_ids <= {run.run_id for run in reopened.get_runs()}
    reopened.dispose()
