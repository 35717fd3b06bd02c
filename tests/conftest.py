"""Session fixtures that start the real services the tests need, on ports of their own.

The test stack lives under .local/test (wiped at the start of a session) so a running demo on
the default ports is left alone. TRAFFIC_TEST_SLOT=k (default 0) moves it to .local/test-k and
shifts every port by 100*k, so several pytest sessions can run side by side.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.stack.hdfs import HdfsCluster
from infra.stack.kafka import KafkaBroker
from infra.stack.postgres import PostgresServer
from infra.stack.web import WebService, registry_service
from traffic_core.events.registry_client import register_event_schemas
from traffic_core.lake_storage import LakePath, lake_path
from traffic_core.settings import LOCAL_STATE_DIR, REPO_ROOT

pytest_plugins = ["api_fixtures"]
"""The trained model, registry and running API shared by the API and dashboard tests."""

TEST_SLOT = int(os.environ.get("TRAFFIC_TEST_SLOT", "0"))
TEST_STATE = REPO_ROOT / ".local" / ("test" if TEST_SLOT == 0 else f"test-{TEST_SLOT}")
PORT_SHIFT = 100 * TEST_SLOT
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REGISTRY_URL_VARIABLE = "TRAFFIC_SCHEMA_REGISTRY_URL"
os.environ[REGISTRY_URL_VARIABLE] = ""
"""Codecs use the built-in ids unless a test asks for the `schema_registry` fixture (a demo's
registry URL in the developer's shell must not leak into the tests)."""


@pytest.fixture(scope="session")
def test_state_dir() -> Path:
    if TEST_STATE.exists():
        _stop_leftovers()
        shutil.rmtree(TEST_STATE)
    TEST_STATE.mkdir(parents=True)
    return TEST_STATE


def _stop_leftovers() -> None:
    """A previous session killed mid-way may have left its services running."""
    _broker(TEST_STATE).stop()
    _tls_broker(TEST_STATE).stop()
    _cluster(TEST_STATE).stop()
    _postgres(TEST_STATE).stop()
    _registry(TEST_STATE).stop()
    _tls_postgres(TEST_STATE).stop()
    _hdfs(TEST_STATE).stop()


def _broker(state: Path) -> KafkaBroker:
    return KafkaBroker(
        state_dir=state / "kafka",
        libs_dir=LOCAL_STATE_DIR / "kafka" / "libs",
        port=19092 + PORT_SHIFT,
        controller_port=19093 + PORT_SHIFT,
    )


def _tls_broker(state: Path) -> KafkaBroker:
    """A second broker under TRAFFIC_SECURITY=tls: SASL_SSL, SCRAM users, ACLs, TLS controller."""
    plaintext = _broker(state)
    return dataclasses.replace(
        plaintext,
        state_dir=state / "kafka-tls",
        port=plaintext.port + 2,
        controller_port=plaintext.controller_port + 2,
        security_dir=state / "security",
    )


def _cluster(state: Path) -> KafkaBroker:
    """Three brokers (each a KRaft controller too) on ports of their own: 19096..19101."""
    return dataclasses.replace(
        _broker(state),
        state_dir=state / "kafka-cluster",
        port=19096 + PORT_SHIFT,
        controller_port=19097 + PORT_SHIFT,
        brokers=3,
    )


def _hdfs(state: Path) -> HdfsCluster:
    """NameNode and two DataNodes on ports (160xx) no other test service uses modulo 100."""
    return HdfsCluster(
        state_dir=state / "hdfs",
        libs_dir=LOCAL_STATE_DIR / "hdfs" / "libs",
        port=16020 + PORT_SHIFT,
        http_port=16070 + PORT_SHIFT,
        datanode_port=16040 + PORT_SHIFT,
    )


@pytest.fixture(scope="session")
def hdfs_cluster(test_state_dir: Path) -> Iterator[HdfsCluster]:
    yield from _running(_hdfs(test_state_dir))


@pytest.fixture(params=["local", "hdfs"])
def local_or_hdfs_lake(request: pytest.FixtureRequest, tmp_path: Path) -> LakePath:
    """An empty lake root, once a local folder and once a folder on the test HDFS cluster
    (started only when a test asks for this root)."""
    if request.param == "local":
        return tmp_path / "lake"
    cluster: HdfsCluster = request.getfixturevalue("hdfs_cluster")
    return lake_path(f"{cluster.url}/tests/{uuid.uuid4().hex[:12]}/lake")


def _postgres(state: Path) -> PostgresServer:
    return PostgresServer(state_dir=state / "postgres", port=15433 + PORT_SHIFT)


def _registry(state: Path) -> WebService:
    # Clear of the test Spark cluster's ports (master 17077, web UIs from 18080 up).
    return registry_service(state / "registry", port=15481 + PORT_SHIFT)


@pytest.fixture(scope="session")
def schema_registry(test_state_dir: Path) -> Iterator[str]:
    """The registry service, every event schema registered as the stack does; yields its URL.

    A probe schema is registered first, so the events' registry ids differ from the built-in
    ones and a codec that ignored the registry would fail the tests that use it.
    """
    for service in _running(_registry(test_state_dir)):
        probe = '{"type": "record", "name": "Probe", "fields": []}'
        httpx.post(f"{service.url}/subjects/probe-value/versions", json={"schema": probe})
        register_event_schemas(service.url)
        yield service.url


def _tls_postgres(state: Path) -> PostgresServer:
    """A second cluster under TRAFFIC_SECURITY=tls: hostssl only, generated passwords, roles."""
    return PostgresServer(
        state_dir=state / "postgres-tls", port=15435 + PORT_SHIFT, security_dir=state / "security"
    )


def _running(service: Any) -> Iterator[Any]:
    """A session fixture's body: start the service, hand it over, stop it at the end."""
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def kafka_broker(test_state_dir: Path) -> Iterator[KafkaBroker]:
    yield from _running(_broker(test_state_dir))


@pytest.fixture(scope="session")
def kafka_cluster(test_state_dir: Path) -> Iterator[KafkaBroker]:
    """Started by the first test that asks for it (the ones parametrized over broker counts)."""
    yield from _running(_cluster(test_state_dir))


@pytest.fixture
def kafka_service(request: pytest.FixtureRequest) -> KafkaBroker:
    """The one-broker or the three-broker service, as `kafka_helpers.ONE_AND_THREE_BROKERS`
    parametrizes it."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def kafka_tls_broker(test_state_dir: Path) -> Iterator[KafkaBroker]:
    yield from _running(_tls_broker(test_state_dir))


@pytest.fixture(scope="session")
def postgres_server(test_state_dir: Path) -> Iterator[PostgresServer]:
    yield from _running(_postgres(test_state_dir))


@pytest.fixture(scope="session")
def postgres_tls_server(test_state_dir: Path) -> Iterator[PostgresServer]:
    yield from _running(_tls_postgres(test_state_dir))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "metr-la").is_dir():
        pytest.fail(f"the shared METR-LA data is expected at {SHARED_DATA}")
    return SHARED_DATA


SERVICE_FIXTURES = frozenset(
    {
        "kafka_broker",
        "kafka_cluster",
        "kafka_service",
        "kafka_tls_broker",
        "postgres_server",
        "postgres_tls_server",
        "schema_registry",
        "hdfs_cluster",
        "local_or_hdfs_lake",
    }
)
"""Session fixtures that start a real service: a test using one, even through another fixture,
is an integration test and must say so, so `-m "not integration"` really runs without them."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        listed = "\n  ".join(unmarked)
        raise pytest.UsageError(
            f"tests that start real services lack the integration mark:\n  {listed}"
        )
    if any(HDFS_FIXTURES.intersection(getattr(item, "fixturenames", ())) for item in items):
        launch_spark_gateway()


HDFS_FIXTURES = frozenset({"hdfs_cluster", "local_or_hdfs_lake"})


def launch_spark_gateway() -> None:
    """Start PySpark's JVM gateway now, with the platform's Spark settings, before any test runs.

    PySpark launches the gateway by forking this process and running Python in the child
    (`preexec_fn`). Once hdfs-native's client threads exist in this process, that fork can
    deadlock. The gateway outlives the sessions the Spark tests create and stop, so launching
    it before any HDFS client exists keeps every later session clear of that fork."""
    from pyspark import SparkConf, SparkContext

    from resources.spark import spark_config
    from traffic_core.settings import SparkSettings

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf = SparkConf().setAll(list(spark_config(SparkSettings()).items()))
    SparkContext._ensure_initialized(conf=conf)
