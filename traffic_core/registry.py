"""The model registry: versioned artifact folders and an atomically moved `latest` pointer.

Layout under `root`:
    versions/<version>/manifest.json and the artifacts it lists with their sha256
    latest                      one line: the version the API should serve
    .tmp-<uuid>/                a version being written (left behind only by a killed writer)

A version is written completely into a staging folder, fsynced, and renamed into versions/ in
one step; only then is `latest` replaced (temp file, fsync, rename). A writer killed at any
moment therefore leaves `latest` on the previous complete version (or absent), and versions/
holds only complete versions. Version names (`20261125T161500Z-<commit>`) sort by time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from traffic_core.durable import fsync_path as _fsync

MANIFEST = "manifest.json"
LATEST = "latest"
VERSIONS = "versions"
STAGING_PREFIX = ".tmp-"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"

REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "version": str,
    "created_at": str,
    "metrics": dict,
    "feature_names": list,
    "feature_version": str,
    "training_data_version": str,
    "lake_partitions": list,
    "kafka_offsets": list,
    "code_version": str,
    "artifacts": dict,
}
"""What every manifest holds, so an auditor can trace a forecast back to data and code."""

OFFSET_KEYS = ("topic", "partition", "first", "last")
BUILDER_KEYS = (
    "metrics",
    "feature_names",
    "feature_version",
    "training_data_version",
    "lake_partitions",
    "kafka_offsets",
)
"""Manifest entries the caller's builder supplies; the registry adds the rest."""
INGEST_IDS = "ingest_ids"
"""Optional builder entry: `[{"ingest_id", "readings"}]`, the producer replays behind the
training rows. Manifests written before it existed read as an empty list."""


class ManifestError(ValueError):
    """A manifest lacks an entry, has one of the wrong type, or disagrees with its files."""


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ManifestError(f"manifest lacks {missing}")
    wrong = [k for k, t in REQUIRED_KEYS.items() if not isinstance(manifest[k], t)]
    if wrong:
        raise ManifestError(f"manifest entries of the wrong type: {wrong}")
    for entry in manifest["kafka_offsets"]:
        if not isinstance(entry, dict) or not set(OFFSET_KEYS) <= set(entry):
            raise ManifestError(f"kafka offset range {entry!r} lacks one of {OFFSET_KEYS}")
    for name, info in manifest["artifacts"].items():
        if not isinstance(info, dict) or "sha256" not in info:
            raise ManifestError(f"artifact {name!r} has no sha256")
    for entry in manifest.get(INGEST_IDS, []):
        if not isinstance(entry, dict) or not {"ingest_id", "readings"} <= set(entry):
            raise ManifestError(f"ingest id entry {entry!r} lacks ingest_id or readings")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of a frame's values, index and column names: a training data version that
    changes whenever a single input reading does."""
    digest = hashlib.sha256(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def git_commit(cwd: Path = Path(__file__).parent) -> str:
    """`git rev-parse HEAD` of the checkout the code runs from, or "unknown"."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


class ModelRegistry:
    """Reader and writer of one registry folder (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / VERSIONS

    def latest(self) -> str | None:
        try:
            return (self.root / LATEST).read_text().strip() or None
        except FileNotFoundError:
            return None

    def list_versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir())

    def path(self, version: str) -> Path:
        return self.versions_dir / version

    def load_manifest(self, version: str) -> dict[str, Any]:
        manifest = json.loads((self.path(version) / MANIFEST).read_text())
        manifest.setdefault(INGEST_IDS, [])
        validate_manifest(manifest)
        if manifest["version"] != version:
            raise ManifestError(f"folder {version} holds the manifest of {manifest['version']}")
        return manifest

    def verify(self, version: str) -> dict[str, Any]:
        """The manifest, after checking every artifact it lists against its sha256."""
        manifest = self.load_manifest(version)
        for name, info in manifest["artifacts"].items():
            actual = sha256_file(self.path(version) / name)
            if actual != info["sha256"]:
                raise ManifestError(f"{version}/{name}: sha256 {actual} != {info['sha256']}")
        return manifest

    def publish(
        self,
        build: Callable[[Path], Mapping[str, Any]],
        *,
        code_version: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Create a version and point `latest` at it; returns its name.

        `build(folder)` writes the artifacts into `folder` and returns the manifest entries in
        BUILDER_KEYS. The registry adds version, created_at, code_version (default: the git
        commit) and the sha256 of every file written."""
        code_version = code_version or git_commit()
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            entries = dict(build(staging))
            absent = [key for key in BUILDER_KEYS if key not in entries]
            if absent:
                raise ManifestError(f"the builder returned no {absent}")
            created = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
            version = self._next_version(created, code_version)
            files = sorted(p for p in staging.rglob("*") if p.is_file())
            manifest = {
                INGEST_IDS: [],
                **entries,
                "version": version,
                "created_at": created.isoformat(),
                "code_version": code_version,
                "artifacts": {
                    p.relative_to(staging).as_posix(): {
                        "sha256": sha256_file(p),
                        "bytes": p.stat().st_size,
                    }
                    for p in files
                },
            }
            validate_manifest(manifest)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            for path in [
                *files,
                staging / MANIFEST,
                *(p for p in staging.rglob("*") if p.is_dir()),
            ]:
                _fsync(path)
            _fsync(staging)
            os.rename(staging, self.path(version))  # fails rather than merge into a taken name
            _fsync(self.versions_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._point_latest(version)
        return version

    def _next_version(self, created: datetime, code_version: str) -> str:
        """Named by creation time, moved a second past the newest version if the clock has
        not advanced beyond it, so names sort in publishing order."""
        newest = self.list_versions()
        if newest:
            previous = datetime.strptime(newest[-1].split("-")[0], TIME_FORMAT).replace(tzinfo=UTC)
            created = max(created, previous + timedelta(seconds=1))
        return f"{created.strftime(TIME_FORMAT)}-{code_version[:7]}"

    def _point_latest(self, version: str) -> None:
        tmp = self.root / f".{LATEST}.{uuid.uuid4().hex}"
        with tmp.open("w") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / LATEST)
        _fsync(self.root)
