"""The writers' validation rules come from TRAFFIC_INGEST_* settings, and a missing sensor
catalogue stops a writer at start instead of switching the sensor check off."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from traffic_assets.ingestion.assets import partition_days
from traffic_core.ingestion.config import (
    SensorCatalogueMissing,
    sensor_catalogue,
    validation_config,
)
from traffic_core.settings import REPO_ROOT, IngestionSettings


def test_rules_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIC_INGEST_EVENT_TIME_FLOOR", "2017-01-01T00:00:00Z")
    monkeypatch.setenv("TRAFFIC_INGEST_ALLOWED_LATENESS_HOURS", "6")
    monkeypatch.setenv("TRAFFIC_INGEST_UNKNOWN_FIELDS", "reject")
    config = validation_config(frozenset({"a"}), settings=IngestionSettings())
    assert config.event_time_floor == datetime(2017, 1, 1, tzinfo=UTC)
    assert config.allowed_lateness == timedelta(hours=6)
    assert config.unknown_fields == "reject"
    assert config.known_sensors == frozenset({"a"})
    monkeypatch.setenv("TRAFFIC_INGEST_ALLOWED_LATENESS_HOURS", "0")
    assert validation_config(None, settings=IngestionSettings()).allowed_lateness is None


def test_defaults_are_declared() -> None:
    config = validation_config(None)
    assert config.event_time_floor == datetime(2012, 3, 1, tzinfo=UTC)
    assert config.allowed_lateness == timedelta(days=7)
    assert config.unknown_fields == "count"
    assert config.partition_days is None


def test_a_floor_without_a_time_zone_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIC_INGEST_EVENT_TIME_FLOOR", "2012-03-01")
    with pytest.raises(ValidationError, match="timezone"):
        IngestionSettings()


def test_catalogue_comes_from_the_lake_or_the_dataset_never_from_nowhere(
    tmp_path: Path, shared_data: Path
) -> None:
    from_dataset = sensor_catalogue(tmp_path / "lake", "metr-la", shared_data)
    assert len(from_dataset) == 207 and "773869" in from_dataset
    with pytest.raises(SensorCatalogueMissing, match="no sensor catalogue"):
        sensor_catalogue(tmp_path / "lake", "metr-la", tmp_path / "no-data")


def test_a_group_worker_without_catalogue_stops_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "TRAFFIC_DATA_DIR": str(tmp_path / "no-data")}
    done = subprocess.run(
        [sys.executable, "-m", "traffic_core.ingestion.group_worker", "--lake-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "SensorCatalogueMissing" in done.stderr and "no sensor catalogue" in done.stderr


def test_a_live_streams_readings_of_today_have_a_partition() -> None:
    """Readings of the current UTC day are stored (a partial day), not refused as outside."""
    first, last = partition_days()
    assert first == date(2012, 3, 1)
    assert last == datetime.now(UTC).date()
