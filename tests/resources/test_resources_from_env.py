"""Resources bind what the environment sets as `EnvVar`, and resolve it when a run starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import EnvVar, asset, materialize

from resources import LakeResource, build_resources


def test_a_set_variable_is_bound_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAFFIC_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    bound = build_resources()
    assert isinstance(bound["lake"].root, EnvVar) and bound["lake"].root == "TRAFFIC_LAKE_DIR"
    assert isinstance(bound["kafka"].bootstrap_servers, EnvVar)


def test_an_unset_variable_binds_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAFFIC_MODEL_DIR", raising=False)
    root = build_resources()["model_store"].root
    assert not isinstance(root, EnvVar) and root.endswith("models")


def test_a_run_sees_the_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAFFIC_LAKE_DIR", str(tmp_path / "lake"))
    seen: list[Path] = []

    @asset
    def probe(lake: LakeResource) -> None:
        seen.append(lake.path())

    result = materialize([probe], resources={"lake": build_resources()["lake"]})
    assert result.success and seen == [tmp_path / "lake"]
