"""A single-node Apache Kafka 4.x broker in KRaft mode, assembled from Maven Central jars."""

from __future__ import annotations

import hashlib
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra.stack.certs import CertificateAuthority
from infra.stack.kafka_acls import apply_acls
from infra.stack.kafka_users import (
    BROKER_USER,
    add_missing_users,
    ensure_passwords,
    scram_argument_file,
)
from infra.stack.process import (
    ManagedProcess,
    ServiceError,
    require_free_port,
    run_checked,
    wait_until,
    write_private,
)
from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.settings import KafkaPrincipal, SecuritySettings

INFRA_DIR = Path(__file__).resolve().parents[1] / "kafka"
POM = INFRA_DIR / "pom.xml"


@dataclass(frozen=True)
class KafkaBroker:
    """One broker: its ports and the folder holding its data, logs and pid file.

    The jars live in a shared folder so a test broker and the demo broker reuse one download.
    With a `security_dir` the broker speaks only SASL_SSL (SCRAM users, ACLs, TLS controller),
    with the CA, certificates and passwords kept there; without one, plaintext.
    """

    state_dir: Path
    libs_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    security_dir: Path | None = None
    data_dir: Path | None = None
    """Where the log segments live (default `state_dir/data`)."""

    @property
    def storage_dir(self) -> Path:
        return self.data_dir or self.state_dir / "data"

    @property
    def security(self) -> SecuritySettings:
        if self.security_dir is None:
            return SecuritySettings(security="plaintext")
        return SecuritySettings(security="tls", security_dir=self.security_dir)

    def client_config(self, principal: KafkaPrincipal) -> dict[str, object]:
        """How a client acting as `principal` reaches this broker."""
        return kafka_client_config(self.bootstrap_servers, principal, self.security)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="kafka",
            pid_file=self.state_dir / "kafka.pid",
            log_file=self.state_dir / "logs" / "stdout.log",
            marker=f"{self.state_dir}/server.properties",
        )

    def ensure_jars(self) -> None:
        """Copy kafka_2.13 and its runtime dependencies from Maven Central, once per pom."""
        stamp = self.libs_dir / ".pom.sha256"
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text() == digest:
            return
        if shutil.which("mvn") is None:
            raise ServiceError("kafka: Maven (mvn) not found. Install it: apt-get install maven")
        if self.libs_dir.exists():
            shutil.rmtree(self.libs_dir)
        run_checked(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={self.libs_dir}",
            ],
            "kafka: copying broker jars from Maven Central",
        )
        stamp.write_text(digest)

    def write_config(self) -> Path:
        """Render `server.properties` (0600: under TLS it holds the broker's own password)."""
        return self._render_config()

    def _render_config(self) -> Path:
        values: dict[str, object] = {
            "KAFKA_HOST": self.host,
            "KAFKA_PORT": self.port,
            "KAFKA_CONTROLLER_PORT": self.controller_port,
            "KAFKA_DATA_DIR": self.storage_dir,
        }
        if self.security_dir is not None:
            ca = CertificateAuthority(self.security_dir)
            values |= {
                "KAFKA_BROKER_USER": BROKER_USER,
                "KAFKA_BROKER_PASSWORD": ensure_passwords(self.security)[BROKER_USER],
                "KAFKA_BROKER_KEYSTORE": ca.keystore("kafka-broker"),
                "KAFKA_CONTROLLER_KEYSTORE": ca.keystore("kafka-controller"),
                "KAFKA_CA_FILE": ca.ca_cert,
            }
        listeners = INFRA_DIR / f"listeners-{self.security.security}.properties.template"
        values["KAFKA_LISTENERS"] = string.Template(listeners.read_text()).substitute(values)
        template = string.Template((INFRA_DIR / "server.properties.template").read_text())
        config = self.state_dir / "server.properties"
        write_private(config, template.substitute(values))  # it holds the broker's password
        return config

    def write_deployment_files(self) -> tuple[Path, Path]:
        """For a TLS broker that another host runs (docker-compose): its `server.properties` and
        the 0600 `--add-scram` argument file to format its storage with (`@file`), both in
        `state_dir`, with the CA, certificates and passwords they name."""
        if self.security_dir is None:
            raise ServiceError("kafka: deployment files are for a TLS broker (security_dir)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        CertificateAuthority(self.security_dir).ensure()
        users = ensure_passwords(self.security)
        return self._render_config(), scram_argument_file(self.state_dir / "format.args", users)

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", "-cp", f"{self.libs_dir}/*", main, *args]

    def _format_storage(self, config: Path) -> None:
        if (self.storage_dir / "meta.properties").exists():
            return
        cluster_id = (
            run_checked(self._java("kafka.tools.StorageTool", "random-uuid"), "kafka: cluster id")
            .stdout.strip()
            .splitlines()[-1]
        )
        users = self.state_dir / "scram-users.args"
        try:
            run_checked(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                    *self._scram_users(users),
                ),
                "kafka: formatting KRaft storage",
            )
        finally:
            users.unlink(missing_ok=True)

    def _scram_users(self, argument_file: Path) -> list[str]:
        """The users' `--add-scram` arguments as a 0600 `@file` (no password on the command
        line, where any local user could read it)."""
        if self.security_dir is None:
            return []
        return [f"@{scram_argument_file(argument_file, ensure_passwords(self.security))}"]

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker unless it runs already, and wait until it answers metadata."""
        if self.process.running():
            self.wait_ready(timeout)
            return
        if shutil.which("java") is None:
            raise ServiceError(
                "kafka: Java not found. Install a JRE 17+: apt-get install openjdk-17-jre-headless"
            )
        require_free_port(self.host, self.port, "kafka")
        require_free_port(self.host, self.controller_port, "kafka controller")
        self.ensure_jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.security_dir is not None:
            CertificateAuthority(self.security_dir).ensure()
        config = self._render_config()
        self._format_storage(config)
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        self.process.spawn(
            [
                "java",
                f"-Xmx{self.heap}",
                f"-Xms{self.heap}",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dkafka.logs.dir={logs}",
                f"-Dlog4j2.configurationFile={INFRA_DIR / 'log4j2.properties'}",
                "-cp",
                f"{self.libs_dir}/*",
                "kafka.Kafka",
                str(config),
            ]
        )
        self.wait_ready(timeout)
        self.set_up_principals()

    def set_up_principals(self) -> None:
        """Under TLS: create the SCRAM users the broker lacks and every principal's ACLs (both
        idempotent), as the broker's super user. Also how a broker started elsewhere (compose)
        gets them."""
        if self.security_dir is None:
            return
        admin = AdminClient(self.client_config(BROKER_USER))
        add_missing_users(admin, ensure_passwords(self.security))
        apply_acls(admin)

    def answers(self, timeout: float = 2.0) -> bool:
        """True when the broker returns cluster metadata."""
        admin = AdminClient({**self.client_config(BROKER_USER), "log_level": 0})
        try:
            return bool(admin.list_topics(timeout=timeout).brokers)
        except Exception:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if not self.process.running():
                raise ServiceError(
                    f"kafka: broker exited during start-up; last log lines:\n"
                    f"{self.process.log_tail()}\n(full log: {self.state_dir / 'logs'})"
                )
            return self.answers()

        if not wait_until(ready, timeout, interval=0.5):
            raise ServiceError(
                f"kafka: broker did not answer on {self.bootstrap_servers} within {timeout:.0f}s; "
                f"see {self.state_dir / 'logs'}"
            )

    def stop(self) -> bool:
        return self.process.stop(timeout=30.0)

    def kill(self) -> bool:
        """SIGKILL the broker, as a crash would (for recovery tests)."""
        return self.process.kill()

    def status(self) -> str:
        pid = self.process.pid()
        if pid is None:
            return "stopped"
        return f"running (pid {pid}) on {self.bootstrap_servers}" + (
            "" if self.answers() else ", not answering yet"
        )
