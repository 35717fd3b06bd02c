"""A real trained model in a registry and the real API serving it, for the API's and the
dashboard's tests (a pytest plugin of tests/conftest.py, so every test module sees them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest
from confluent_kafka.admin import AdminClient
from kafka_helpers import fresh_topics

from infra.stack.certs import CertificateAuthority
from infra.stack.kafka import KafkaBroker
from infra.stack.web import WebService, api_service
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.models.quick import train_and_publish
from traffic_core.settings import REPO_ROOT

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
TRAIN_UNTIL = pd.Timestamp("2012-03-05 23:55")
LIVE_FROM = pd.Timestamp("2012-03-06 06:00")
"""The API tests replay 6 March from here; the model never saw that day."""
JWT_SECRET = "test-secret-of-at-least-32-bytes-for-hs256"
ROLES = ("planner", "operator", "auditor", "service")


def real_speeds(shared_data: Path) -> pd.DataFrame:
    return load_speed_csv(shared_data / SIX_DAYS)


def publish_ridge(
    registry_root: Path, speeds: pd.DataFrame, shared_data: Path, alpha: float = 10.0
) -> str:
    """A real ridge model per horizon on `speeds`, published with code version "test"."""
    graph = load_metr_la_graph(shared_data / "metr-la")
    offsets = [{"topic": "traffic-events", "partition": 0, "first": 0, "last": 0}]
    return train_and_publish(
        registry_root,
        speeds,
        graph,
        "ridge",
        {"alpha": alpha},
        kafka_offsets=offsets,
        code_version="test",
    )


@pytest.fixture(scope="session")
def model_registry(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding one real model trained on 1-5 March 2012 (all 207 sensors)."""
    root = tmp_path_factory.mktemp("registry")
    publish_ridge(root, real_speeds(shared_data).loc[:TRAIN_UNTIL], shared_data)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def produce_real(bootstrap_servers: str, topic: str, dlq: str, speeds: pd.DataFrame) -> int:
    sink = ReadingProducer(bootstrap_servers, topic=topic, dlq_topic=dlq)
    summary = replay_speeds(speeds, sink, source="metr-la", is_synthetic=False)
    assert summary.delivery_failures == 0
    return summary.events


def api_env(registry: Path, broker: KafkaBroker, topic: str, **extra: str) -> dict[str, str]:
    return {
        "TRAFFIC_API_MODEL_DIR": str(registry),
        "TRAFFIC_API_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "TRAFFIC_API_EVENTS_TOPIC": topic,
        "TRAFFIC_API_PREDICTIONS_TOPIC": f"{topic}-predictions",
        "TRAFFIC_API_ALERTS_TOPIC": f"{topic}-alerts",
        "TRAFFIC_API_INCIDENTS_TOPIC": f"{topic}-incidents",
        "TRAFFIC_API_WEATHER_TOPIC": f"{topic}-weather",
        "TRAFFIC_API_MODEL_POLL_SECONDS": "0.5",
        "TRAFFIC_API_JWT_SECRET": JWT_SECRET,
        "TRAFFIC_API_RATE_LIMIT": "100000/second",
        # the fuzzing sends many bad credentials from 127.0.0.1; limits are tested in-process
        "TRAFFIC_API_AUTH_FAILURE_LIMIT": "",
        "TRAFFIC_API_AUDIT_URL": f"sqlite:///{registry.parent / 'audit.db'}",
        **extra,
    }


@dataclass
class ApiServer:
    """`uvicorn serving.app:app` in its own process, as deployed."""

    env: dict[str, str]
    topic: str = ""
    dlq: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log: Path | None = None
    ready_path: str = "/v1/ready"
    """Polled until it answers 200 (/v1/health for an API that is never ready)."""

    @property
    def bootstrap_servers(self) -> str:
        return self.env["TRAFFIC_API_KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, role: str = "planner", subject: str = "test") -> str:
        from serving.security import SecuritySettings, issue_token

        settings = SecuritySettings(jwt_secret=JWT_SECRET)
        return issue_token(subject, [role], settings, ttl=3600)

    def headers(self, role: str = "planner") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}

    def start(self, log_dir: Path, ready_timeout: float = 90.0) -> None:
        self.log = log_dir / f"api-{self.port}.log"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "serving.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"API exited: {self.log.read_text()[-3000:]}")
            try:
                answer = httpx.get(f"{self.url}{self.ready_path}", timeout=2)
                if answer.status_code == 200:
                    return
                last = answer.text
            except httpx.HTTPError as error:
                last = str(error)
            time.sleep(0.3)
        raise AssertionError(f"API not ready after {timeout} s: {last}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture(scope="module")
def api_server(
    kafka_broker: KafkaBroker,
    model_registry: Path,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """The API as a process over a fresh topic holding two real hours of 6 March 2012."""
    topic, dlq = fresh_topics(kafka_broker)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(f"{topic}-{kind}", 2) for kind in ("predictions", "alerts")])
    speeds = real_speeds(shared_data)
    two_hours = speeds.loc[LIVE_FROM : LIVE_FROM + pd.Timedelta("115min")]
    produce_real(kafka_broker.bootstrap_servers, topic, dlq, two_hours)
    server = ApiServer(api_env(model_registry, kafka_broker, topic), topic, dlq)
    server.start(tmp_path_factory.mktemp("api-logs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """A stack CA of the module's own, with every service's certificate."""
    authority = CertificateAuthority(tmp_path_factory.mktemp("security"))
    authority.ensure()
    return authority


@pytest.fixture(scope="module")
def https_api(
    ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebService]:
    """The real API over HTTPS, started by the stack's own service definition (it waits until
    /v1/health answers over HTTPS, verified against the CA); no model, no Kafka."""
    state = tmp_path_factory.mktemp("api")
    service = api_service(state, port=free_port(), tls=ca)
    service.start(
        env={
            "TRAFFIC_API_MODEL_DIR": str(state / "models"),
            "TRAFFIC_API_LIVE": "false",
            "TRAFFIC_API_JWT_SECRET": JWT_SECRET,
            "TRAFFIC_API_AUDIT_URL": f"sqlite:///{state / 'audit.db'}",
        }
    )
    yield service
    service.stop()
