"""docker-compose.yml cannot run here (no Docker engine); keep it consistent with the code."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from infra.stack.kafka import KafkaBroker
from serving.security import SecuritySettings
from serving.settings import ApiSettings
from traffic_core.kafka.topics import Replication
from traffic_core.settings import (
    REPO_ROOT,
    KafkaSettings,
    PlatformSettings,
    PostgresSettings,
    SparkSettings,
)

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
APP_SERVICES = [
    name for name, spec in COMPOSE["services"].items() if spec.get("image") == "metr-traffic:latest"
]


def settings_env_names(*classes: type[BaseSettings]) -> set[str]:
    names = set()
    for cls in classes:
        prefix = cls.model_config.get("env_prefix", "")
        for field, info in cls.model_fields.items():
            alias = info.validation_alias
            names.add(alias if isinstance(alias, str) else f"{prefix}{field}".upper())
    return names


def env_names_read_by_source() -> set[str]:
    """Names read with os.environ[...] / os.environ.get(...) (or an `env` mapping
    standing for it) anywhere in the project."""
    pattern = re.compile(r"""(?:os\.environ|env)(?:\.get)?[\[(]\s*["']([A-Z0-9_]+)["']""")
    names: set[str] = set()
    for path in REPO_ROOT.glob("*/**/*.py"):
        if ".venv" in path.parts or ".local" in path.parts:
            continue
        names |= set(pattern.findall(path.read_text()))
    return names


def env_names_read_by_dagster_config() -> set[str]:
    """Names Dagster reads through `env: NAME` in the instance and workspace files."""
    pattern = re.compile(r"env:\s*([A-Z0-9_]+)")
    files = [REPO_ROOT / "dagster.yaml", *(REPO_ROOT / "infra" / "dagster").glob("*.yaml")]
    return {name for path in files for name in pattern.findall(path.read_text())}


def test_all_services_of_the_topology_are_described() -> None:
    assert {
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "postgres",
        "dagster-code-server",
        "dagster-webserver",
        "dagster-daemon",
        "api",
        "dashboard",
    } <= set(COMPOSE["services"])
    assert set(APP_SERVICES) >= {"dagster-webserver", "dagster-daemon", "api", "dashboard"}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_env_names_are_ones_the_project_reads(service: str) -> None:
    known = (
        settings_env_names(
            PlatformSettings,
            KafkaSettings,
            SparkSettings,
            PostgresSettings,
            ApiSettings,
            SecuritySettings,
        )
        | env_names_read_by_source()
        | env_names_read_by_dagster_config()
        | {"DAGSTER_HOME"}
    )
    env: dict[str, Any] = COMPOSE["services"][service].get("environment", {})
    unknown = sorted(set(env) - known)
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_commands_name_real_modules_and_files(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAFFIC_API_JWT_SECRET", "x" * 48)  # serving.app:app builds the app
    monkeypatch.setenv("TRAFFIC_API_AUDIT_ENABLED", "false")
    command: list[str] = COMPOSE["services"][service]["command"]
    for flag, value in itertools.pairwise(command):
        if flag in ("-m", "--module-name"):
            assert importlib.util.find_spec(value) is not None, value
        if flag == "--workspace" or value.endswith((".py", ".yaml")):
            assert (REPO_ROOT / value).is_file(), value
    for target in (word for word in command if re.fullmatch(r"[\w.]+:\w+", word)):
        module, attr = target.split(":")
        assert hasattr(importlib.import_module(module), attr), target


def test_ports_match_local_defaults() -> None:
    services = COMPOSE["services"]
    assert "3000:3000" in services["dagster-webserver"]["ports"]
    assert f"{ApiSettings().port}:{ApiSettings().port}" in services["api"]["ports"]
    assert "--port" in services["api"]["command"]
    port = int(KafkaSettings().bootstrap_servers.rsplit(":", 1)[1])
    local = KafkaBroker(Path(), Path(), port=port, brokers=3)  # the local cluster's ports
    for node in local.nodes:
        assert f"{node.port}:{node.port}" in services[f"kafka-{node.node_id}"]["ports"]


def test_three_brokers_form_one_cluster_the_apps_reach_whole() -> None:
    """One quorum of the three nodes, one cluster id, replication 3 with two in sync (what the
    local cluster renders), and apps told every broker and the broker count."""
    nodes = {name: spec for name, spec in COMPOSE["services"].items() if name.startswith("kafka-")}
    envs = [spec["environment"] for spec in nodes.values()]
    assert len(nodes) == 3
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    voters = envs[0]["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    advertised = []
    for name, env in zip(nodes, envs, strict=True):
        node_id = env["KAFKA_NODE_ID"]
        assert name == f"kafka-{node_id}"
        controller = env["KAFKA_LISTENERS"].split("CONTROLLER://:")[1]
        assert f"{node_id}@{name}:{controller}" in voters
        advertised.append(env["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://"))
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == ",".join(voters)
    replication = Replication.for_brokers(len(nodes))
    for env in envs:
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == replication.factor
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == replication.factor
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == replication.factor
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == replication.min_insync
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == replication.min_insync
    app_env = COMPOSE["x-app-env"]
    assert app_env["KAFKA_BOOTSTRAP_SERVERS"].split(",") == advertised
    assert KafkaSettings(brokers=app_env["KAFKA_BROKERS"]).brokers == len(nodes)
    assert set(COMPOSE["services"]["topics"]["depends_on"]) == set(nodes)


def test_the_schema_registry_serves_the_apps_and_registers_first() -> None:
    services = COMPOSE["services"]
    registry = services["schema-registry"]
    port = registry["command"][registry["command"].index("--port") + 1]
    assert f"{port}:{port}" in registry["ports"]
    assert PlatformSettings.model_fields["schema_registry_url"].default.endswith(f":{port}")
    assert COMPOSE["x-app-env"]["TRAFFIC_SCHEMA_REGISTRY_URL"] == f"http://schema-registry:{port}"
    assert services["schemas"]["command"][-2:] == ["infra.stack", "schemas"]
    for app in ("dagster-code-server", "api", "ingest-worker"):
        assert services[app]["depends_on"]["schemas"] == {
            "condition": "service_completed_successfully"
        }


def test_grpc_workspace_points_at_the_code_server() -> None:
    workspace = yaml.safe_load(
        (REPO_ROOT / "infra" / "dagster" / "workspace.grpc.yaml").read_text()
    )
    server = workspace["load_from"][0]["grpc_server"]
    code_server = COMPOSE["services"]["dagster-code-server"]["command"]
    assert str(server["port"]) == code_server[code_server.index("--port") + 1]
    assert server["location_name"] == code_server[code_server.index("--location-name") + 1]
    assert Path(REPO_ROOT / "infra" / "docker" / "Dockerfile").is_file()
