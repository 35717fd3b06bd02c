"""Model registry: complete manifests, and `latest` never on a half-written version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from traffic_core.features import FEATURE_NAMES, FEATURE_VERSION
from traffic_core.registry import (
    MANIFEST,
    REQUIRED_KEYS,
    STAGING_PREFIX,
    ManifestError,
    ModelRegistry,
    frame_fingerprint,
    git_commit,
    validate_manifest,
)
from traffic_core.settings import REPO_ROOT

REPO = REPO_ROOT
NOW = datetime(2026, 11, 25, 16, 15, tzinfo=UTC)


def entries(**overrides: Any) -> dict[str, Any]:
    return {
        "metrics": {"15": {"xgboost": {"mae": 2.9}, "persistence": {"mae": 3.3}}},
        "feature_names": list(FEATURE_NAMES),
        "feature_version": FEATURE_VERSION,
        "training_data_version": "sha256:abc",
        "lake_partitions": ["2012-03-01", "2012-03-02"],
        "kafka_offsets": [{"topic": "traffic-events", "partition": 0, "first": 0, "last": 99}],
        **overrides,
    }


def build_small(folder: Path) -> dict[str, Any]:
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    (folder / "context").mkdir()
    (folder / "context" / "context.npz").write_bytes(b"npz bytes")
    return entries()


def assert_consistent(registry: ModelRegistry) -> None:
    """Every listed version is complete; latest, when set, names one of them."""
    versions = registry.list_versions()
    for version in versions:
        registry.verify(version)
    assert registry.latest() is None or registry.latest() in versions


def test_publish_writes_a_complete_manifest_and_moves_latest(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.latest() is None and registry.list_versions() == []
    version = registry.publish(build_small, now=NOW)
    commit = git_commit()
    assert version == f"20261125T161500Z-{commit[:7]}"
    assert registry.latest() == version and registry.list_versions() == [version]
    manifest = registry.verify(version)
    assert set(REQUIRED_KEYS) <= set(manifest)
    assert manifest["created_at"] == "2026-11-25T16:15:00+00:00"
    assert manifest["feature_names"] == list(FEATURE_NAMES)
    assert manifest["feature_version"] == FEATURE_VERSION
    assert manifest["kafka_offsets"][0]["last"] == 99
    assert set(manifest["artifacts"]) == {"model.onnx", "context/context.npz"}
    assert manifest["artifacts"]["model.onnx"]["bytes"] == len(b"onnx bytes")
    expected = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert manifest["code_version"] == (expected or "unknown")
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_version_names_sort_in_publishing_order(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    names = [registry.publish(build_small, code_version=c, now=NOW) for c in ("fff", "aaa", "000")]
    assert registry.list_versions() == names == sorted(names)
    assert registry.latest() == names[-1]


@pytest.mark.parametrize("key", list(REQUIRED_KEYS))
def test_validate_manifest_names_a_missing_entry(key: str) -> None:
    manifest = {
        **entries(),
        "version": "v",
        "created_at": "t",
        "code_version": "c",
        "artifacts": {"model.onnx": {"sha256": "00"}},
    }
    validate_manifest(manifest)
    del manifest[key]
    with pytest.raises(ManifestError, match=key):
        validate_manifest(manifest)


def test_bad_offsets_and_incomplete_builders_are_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(ManifestError, match="lacks one of"):
        registry.publish(lambda folder: entries(kafka_offsets=[{"topic": "t"}]))
    incomplete = entries()
    del incomplete["lake_partitions"]
    with pytest.raises(ManifestError, match="lake_partitions"):
        registry.publish(lambda folder: incomplete)
    assert registry.list_versions() == [] and registry.latest() is None
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_a_tampered_artifact_fails_verification(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = registry.publish(build_small)
    (registry.path(version) / "model.onnx").write_bytes(b"other bytes")
    with pytest.raises(ManifestError, match="sha256"):
        registry.verify(version)


def test_a_failed_pointer_move_leaves_latest_on_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(tmp_path)
    old = registry.publish(build_small)

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        registry.publish(build_small)
    assert registry.latest() == old
    assert_consistent(registry)


def test_training_data_version_follows_every_reading() -> None:
    frame = pd.DataFrame({"a": [50.0, 60.0]}, index=pd.date_range("2012-03-01", periods=2))
    changed = frame.copy()
    changed.iloc[1, 0] = 60.5
    assert frame_fingerprint(frame) == frame_fingerprint(frame.copy())
    assert frame_fingerprint(frame) != frame_fingerprint(changed)


WRITER = """
import sys, time
from pathlib import Path
from traffic_core.registry import ModelRegistry

root, marker, mode = sys.argv[1:4]
chunk = b"x" * (1 << 20)

def build_large(folder):
    with open(folder / "model.onnx", "wb") as handle:
        for i in range(200):
            handle.write(chunk)
            handle.flush()
            if i == 8:
                Path(marker).touch()
            time.sleep(0.01)
    return {ENTRIES}

def build_small(folder):
    (folder / "model.onnx").write_bytes(b"onnx")
    return {ENTRIES}

registry = ModelRegistry(root)
if mode == "large":
    registry.publish(build_large, code_version="killed")
else:
    Path(marker).touch()
    while True:
        registry.publish(build_small, code_version="loop")
"""


def start_writer(root: Path, marker: Path, mode: str) -> subprocess.Popen[bytes]:
    script = WRITER.replace("{ENTRIES}", json.dumps(entries()))
    proc = subprocess.Popen([sys.executable, "-c", script, str(root), str(marker), mode], cwd=REPO)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, f"writer exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "writer never started"
        time.sleep(0.01)
    return proc


@pytest.mark.parametrize("has_previous", [True, False], ids=["previous", "first"])
def test_latest_survives_a_writer_killed_mid_artifact(tmp_path: Path, has_previous: bool) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    old = registry.publish(build_small) if has_previous else None
    proc = start_writer(registry.root, tmp_path / "writing", "large")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert registry.latest() == old
    assert registry.list_versions() == ([old] if old else [])
    assert_consistent(registry)
    staged = list(registry.root.glob(f"{STAGING_PREFIX}*"))  # proof it died mid-write
    assert len(staged) == 1 and (staged[0] / "model.onnx").stat().st_size >= 9 << 20


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45])
def test_latest_survives_a_writer_killed_at_any_stage(tmp_path: Path, delay: float) -> None:
    """A writer publishing in a loop is killed at arbitrary moments: during artifacts, the
    manifest, the rename or the pointer move, the registry stays consistent."""
    registry = ModelRegistry(tmp_path / "registry")
    proc = start_writer(registry.root, tmp_path / "writing", "loop")
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert_consistent(registry)


def test_ingest_ids_are_kept_checked_and_default_to_none_recorded(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    ids = [{"ingest_id": "ingest-20261126T040506-abcdef", "readings": 59616}]
    version = registry.publish(lambda folder: entries(ingest_ids=ids), now=NOW)
    assert registry.load_manifest(version)["ingest_ids"] == ids
    with pytest.raises(ManifestError, match="ingest id entry"):
        registry.publish(lambda folder: entries(ingest_ids=[{"ingest_id": "x"}]))
    # A manifest written before ingest ids existed reads as having none.
    path = registry.path(version) / MANIFEST
    old = json.loads(path.read_text())
    del old["ingest_ids"]
    path.write_text(json.dumps(old))
    assert registry.load_manifest(version)["ingest_ids"] == []
