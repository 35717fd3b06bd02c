"""docker-compose.yml cannot run here (no Docker engine); keep it consistent with the code."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
import stat
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic_settings import BaseSettings

from infra.stack.kafka import KafkaBroker
from serving.security import SecuritySettings
from serving.settings import ApiSettings
from traffic_core.kafka.topics import Replication
from traffic_core.settings import (
    REPO_ROOT,
    KafkaPrincipal,
    KafkaSettings,
    PlatformSettings,
    PostgresSettings,
    SparkSettings,
)
from traffic_core.settings import SecuritySettings as TransitSecuritySettings

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
APP_SERVICES = [
    name for name, spec in COMPOSE["services"].items() if spec.get("image") == "metr-traffic:latest"
]


LIBPQ_NAMES = {"PGSSLMODE", "PGSSLROOTCERT"}
"""Read by libpq itself (Dagster's storage and the audit log connect through it)."""


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
            TransitSecuritySettings,
        )
        | env_names_read_by_source()
        | env_names_read_by_dagster_config()
        | {"DAGSTER_HOME"}
        | LIBPQ_NAMES
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
    assert "127.0.0.1:3000:3000" in services["dagster-webserver"]["ports"]
    assert f"{ApiSettings().port}:{ApiSettings().port}" in services["api"]["ports"]
    assert "--port" in services["api"]["command"]
    port = int(KafkaSettings().bootstrap_servers.rsplit(":", 1)[1])
    local = KafkaBroker(Path(), Path(), port=port, brokers=3)  # the local cluster's ports
    for node in local.nodes:
        assert f"{node.port}:{node.port}" in services[f"kafka-{node.node_id}"]["ports"]


def test_the_schema_registry_serves_the_apps_and_registers_first() -> None:
    services = COMPOSE["services"]
    registry = services["schema-registry"]
    port = registry["command"][registry["command"].index("--port") + 1]
    assert f"{port}:{port}" in registry["ports"]
    default = PlatformSettings.model_fields["schema_registry_url"].default_factory
    assert default is not None and default().endswith(f":{port}")  # type: ignore[call-arg]
    assert COMPOSE["x-app-env"]["TRAFFIC_SCHEMA_REGISTRY_URL"] == f"https://schema-registry:{port}"
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


# -- TRAFFIC_SECURITY=tls, the compose default -------------------------------------------------

SECURITY_MOUNT = "/etc/traffic/security"


def depends_on(service: str) -> set[str]:
    """Every service `service` waits for, directly or through others."""
    direct = COMPOSE["services"][service].get("depends_on", {})
    names = set(direct)
    for name in direct:
        names |= depends_on(name)
    return names


@pytest.fixture(scope="module")
def security_volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the compose `certs` service writes to the security volume, made by the same
    command here (its folder standing for the mount point)."""
    from infra.stack.__main__ import main

    root = tmp_path_factory.mktemp("security")
    certs = COMPOSE["services"]["certs"]["command"][-1].split(" && ")[0].split()
    assert certs[:4] == ["python", "-m", "infra.stack", "certs"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRAFFIC_SECURITY_DIR", str(root))
        env.setenv("KAFKA_BROKERS", COMPOSE["x-app-env"]["KAFKA_BROKERS"])
        assert main(certs[3:]) == 0
    return root


def kafka_nodes() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in COMPOSE["services"].items() if name.startswith("kafka-")}


def node_files(security_volume: Path, service: dict[str, Any]) -> tuple[dict[str, str], str]:
    """The properties (as a dict) and the format arguments the certs service wrote for the
    node that `service` runs (its start command names the node)."""
    folder = security_volume / "kafka" / f"node-{service['command'][-1]}"
    lines = (folder / "server.properties").read_text().splitlines()
    config = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    assert stat.S_IMODE((folder / "format.args").stat().st_mode) == 0o600
    return config, (folder / "format.args").read_text()


def test_three_brokers_form_one_cluster_the_apps_reach_whole(security_volume: Path) -> None:
    """One quorum of the three nodes, one cluster id, replication 3 with two in sync (what the
    local cluster renders), and apps told every broker and the broker count."""
    nodes = kafka_nodes()
    assert len(nodes) == 3
    files = {name: node_files(security_volume, spec) for name, spec in nodes.items()}
    ids = {args.split("\n")[args.split("\n").index("-t") + 1] for _, args in files.values()}
    assert len(ids) == 1  # one cluster id
    replication = Replication.for_brokers(len(nodes))
    quorums, advertised = set(), []
    for name, (config, args) in files.items():
        assert name == f"kafka-{config['node.id']}"
        quorums.add(config["controller.quorum.bootstrap.servers"])
        controllers = args.split("\n")[args.split("\n").index("--initial-controllers") + 1]
        assert len(controllers.split(",")) == len(nodes)
        assert f"{config['node.id']}@{name}:" in controllers
        advertised.append(config["advertised.listeners"].split(",")[0].split("://")[1])
        assert config["default.replication.factor"] == str(replication.factor)
        assert config["offsets.topic.replication.factor"] == str(replication.factor)
        assert config["transaction.state.log.replication.factor"] == str(replication.factor)
        assert config["min.insync.replicas"] == str(replication.min_insync)
        assert config["transaction.state.log.min.isr"] == str(replication.min_insync)
        port = advertised[-1].split(":")[1]
        assert f"{port}:{port}" in nodes[name]["ports"]
    assert len(quorums) == 1 and len(next(iter(quorums)).split(",")) == len(nodes)
    app_env = COMPOSE["x-app-env"]
    assert app_env["KAFKA_BOOTSTRAP_SERVERS"].split(",") == advertised
    assert KafkaSettings(brokers=app_env["KAFKA_BROKERS"]).brokers == len(nodes)
    assert set(COMPOSE["services"]["topics"]["depends_on"]) == set(nodes)


def test_tls_is_the_default_for_every_app_and_waits_for_the_certificates() -> None:
    env = COMPOSE["x-app-env"]
    assert env["TRAFFIC_SECURITY"] == "tls"
    assert env["TRAFFIC_SECURITY_DIR"] == SECURITY_MOUNT
    assert env["PGSSLMODE"] == "verify-full"
    for service in [*APP_SERVICES, *kafka_nodes(), "postgres"]:
        if service != "certs":
            assert "certs" in depends_on(service), service
    for service in APP_SERVICES:
        mounts = COMPOSE["services"][service]["volumes"]
        expected = "security:" + SECURITY_MOUNT + ("" if service == "certs" else ":ro")
        assert expected in mounts, service


def test_every_file_a_service_names_is_one_the_certs_service_writes(
    security_volume: Path,
) -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    named = set(re.findall(rf"{SECURITY_MOUNT}/([\w./-]+\.(?:crt|key))", text))
    assert {"api.key", "dashboard.crt", "schema-registry.key", "postgres.key", "ca.crt"} <= named
    missing = [name for name in named if not (security_volume / name).is_file()]
    assert not missing


def test_the_brokers_are_sasl_ssl_with_acls_and_format_from_an_argument_file(
    security_volume: Path,
) -> None:
    script = REPO_ROOT / "infra" / "docker" / "kafka-start.sh"
    start = script.read_text()
    assert '"@$SECURITY/format.args"' in start and "kafka-server-start.sh" in start
    for name, kafka in kafka_nodes().items():
        assert f"./{script.relative_to(REPO_ROOT)}:{kafka['command'][-2]}:ro" in kafka["volumes"]
        config, args = node_files(security_volume, kafka)
        port = int(config["listeners"].split(",")[0].rsplit(":", 1)[1])
        assert config["listeners"] == f"SASL_SSL://{name}:{port},CONTROLLER://{name}:{port + 1}"
        assert config["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
        assert config["allow.everyone.if.no.acl.found"] == "false"
        data = next(v for v in kafka["volumes"] if v.startswith(f"{name}-data:")).split(":")[1]
        assert config["log.dirs"] == data
        assert args.count("--add-scram") == len(get_args(KafkaPrincipal))


def test_http_services_speak_https_and_clients_verify_by_the_ca() -> None:
    services = COMPOSE["services"]
    assert services["dashboard"]["environment"]["TRAFFIC_API_URL"].startswith("https://")
    assert services["dashboard"]["environment"]["SSL_CERT_FILE"] == f"{SECURITY_MOUNT}/ca.crt"
    for name in ("api", "schema-registry"):
        assert "--ssl-certfile" in services[name]["command"], name
    assert "--server.sslCertFile" in services["dashboard"]["command"]
    assert "https://" in " ".join(services["schema-registry"]["healthcheck"]["test"])
    prometheus = yaml.safe_load((REPO_ROOT / "infra/prometheus/prometheus.yml").read_text())
    api_job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "api")
    assert api_job["scheme"] == "https"
    assert api_job["tls_config"]["ca_file"].startswith("/etc/traffic/ca/")


def test_postgres_takes_tls_logins_only() -> None:
    postgres = COMPOSE["services"]["postgres"]
    assert "-c ssl=on" in postgres["command"][-1]
    hba = REPO_ROOT / "infra" / "docker" / "pg_hba.conf"
    assert f"./{hba.relative_to(REPO_ROOT)}:/etc/postgresql/pg_hba.conf:ro" in postgres["volumes"]
    rules = [line.split() for line in hba.read_text().splitlines() if not line.startswith("#")]
    assert {rule[0] for rule in rules if rule} == {"local", "hostssl"}
