"""Apache Kafka 4.x in KRaft mode, assembled from Maven Central jars: one broker, or a cluster
of N nodes on loopback, each broker and controller in one JVM, the controllers a quorum of N."""

from __future__ import annotations

import base64
import hashlib
import shutil
import string
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
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
from traffic_core.kafka.topics import Replication
from traffic_core.settings import KafkaPrincipal, SecuritySettings

INFRA_DIR = Path(__file__).resolve().parents[1] / "kafka"
POM = INFRA_DIR / "pom.xml"


def kafka_uuid() -> str:
    """A random id as Kafka writes one (URL-safe base64, no padding), for the cluster id and
    the controllers' directory ids; Kafka never issues one starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node of the service: its id, ports and the folder of its data, logs and pid."""

    node_id: int
    state_dir: Path
    port: int
    controller_port: int
    host: str = "127.0.0.1"
    data_dir: Path | None = None
    """Where its log segments live (default `state_dir/data`)."""

    @property
    def storage_dir(self) -> Path:
        return self.data_dir or self.state_dir / "data"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name=f"kafka-{self.node_id}",
            pid_file=self.state_dir / "kafka.pid",
            log_file=self.state_dir / "logs" / "stdout.log",
            marker=f"{self.state_dir}/server.properties",
        )

    @property
    def formatted(self) -> bool:
        return (self.storage_dir / "meta.properties").exists()


@dataclass(frozen=True)
class KafkaBroker:
    """The Kafka service: one broker (the default), or a cluster of `brokers` nodes.

    Node i (from 0) listens on `port + 2i` with its controller on `controller_port + 2i`; one
    broker keeps its state in `state_dir`, a cluster each node in `state_dir/node-<id>`. Every
    node is broker and controller, the controllers one quorum formatted with one cluster id.
    The jars live in a shared folder so a test broker and the demo broker reuse one download.
    With a `security_dir` the brokers speak only SASL_SSL (SCRAM users, ACLs, TLS controller),
    with the CA, certificates and passwords kept there; without one, plaintext.
    """

    state_dir: Path
    libs_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    security_dir: Path | None = None
    brokers: int = 1
    data_dir: Path | None = None
    """Where each node's log segments live (default `<node state>/data`): a deployment's
    volume, for configurations written here for brokers that run elsewhere."""
    node_hosts: tuple[str, ...] = ()
    """One host name per node when the nodes run on hosts of their own (docker-compose);
    empty: every node on `host`."""

    def __post_init__(self) -> None:
        ports = [p for node in self.nodes for p in (node.port, node.controller_port)]
        if self.brokers < 1 or len(set(ports)) != len(ports):
            raise ValueError(
                f"kafka: {self.brokers} brokers from ports {self.port}/{self.controller_port} "
                "would share a port"
            )

    @property
    def nodes(self) -> tuple[KafkaNode, ...]:
        hosts = self.node_hosts or (self.host,) * self.brokers
        return tuple(
            KafkaNode(
                i + 1,
                self.state_dir if self.brokers == 1 else self.state_dir / f"node-{i + 1}",
                self.port + 2 * i,
                self.controller_port + 2 * i,
                hosts[i],
                self.data_dir,
            )
            for i in range(self.brokers)
        )

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    @property
    def replication(self) -> Replication:
        """How the platform's topics are replicated on this many brokers."""
        return Replication.for_brokers(self.brokers)

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
        return ",".join(f"{node.host}:{node.port}" for node in self.nodes)

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

    def _render_config(self, node: KafkaNode) -> Path:
        replication = self.replication
        values: dict[str, object] = {
            "KAFKA_HOST": node.host,
            "KAFKA_NODE_ID": node.node_id,
            "KAFKA_PORT": node.port,
            "KAFKA_CONTROLLER_PORT": node.controller_port,
            "KAFKA_QUORUM": ",".join(f"{n.host}:{n.controller_port}" for n in self.nodes),
            "KAFKA_DATA_DIR": node.storage_dir,
            "KAFKA_REPLICATION_FACTOR": replication.factor,
            "KAFKA_MIN_INSYNC": replication.min_insync,
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
        config = node.state_dir / "server.properties"
        write_private(config, template.substitute(values))  # it holds the broker's password
        return config

    def write_deployment_files(self) -> list[tuple[Path, Path]]:
        """For TLS brokers that other hosts run (docker-compose): per node, its
        `server.properties` and the 0600 argument file to format its storage with (`@file`:
        one cluster id, the controllers' quorum, the SCRAM users), with the CA, certificates
        and passwords they name."""
        if self.security_dir is None:
            raise ServiceError("kafka: deployment files are for TLS brokers (security_dir)")
        CertificateAuthority(self.security_dir).ensure()
        files = []
        for node, arguments in self._format_arguments().items():
            node.state_dir.mkdir(parents=True, exist_ok=True)
            files.append((self._render_config(node), arguments))
        return files

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", "-cp", f"{self.libs_dir}/*", main, *args]

    def _format_arguments(self) -> dict[KafkaNode, Path]:
        """Per node, a 0600 `@file` of StorageTool's format arguments: one cluster id, the
        quorum of all controllers and the SCRAM users (no password on a command line, where
        any local user could read it)."""
        cluster_id = kafka_uuid()
        controllers = ",".join(
            f"{node.node_id}@{node.host}:{node.controller_port}:{kafka_uuid()}"
            for node in self.nodes
        )
        users = ensure_passwords(self.security) if self.security_dir is not None else {}
        return {
            node: scram_argument_file(
                node.state_dir / "format.args",
                users,
                ["-t", cluster_id, "--initial-controllers", controllers],
            )
            for node in self.nodes
        }

    def _format_storage(self, configs: dict[int, Path]) -> None:
        """Format every node once, with one cluster id and the quorum of all controllers."""
        formatted = [node.formatted for node in self.nodes]
        if all(formatted):
            return
        if any(formatted):
            raise ServiceError(
                f"kafka: only some nodes of {self.state_dir} are formatted; a node that lost its "
                "data must rejoin by hand, or remove the folder to start a fresh cluster"
            )
        for node, arguments in self._format_arguments().items():
            try:
                run_checked(
                    self._java(
                        "kafka.tools.StorageTool",
                        "format",
                        "-c",
                        str(configs[node.node_id]),
                        f"@{arguments}",
                    ),
                    f"kafka: formatting KRaft storage of node {node.node_id}",
                )
            finally:
                arguments.unlink(missing_ok=True)

    def start(self, timeout: float = 90.0) -> None:
        """Start the nodes that do not run (all, or one restarting after a crash), and wait
        until every node answers metadata."""
        down = [node for node in self.nodes if not node.process.running()]
        if not down:
            self.wait_ready(timeout)
            return
        if shutil.which("java") is None:
            raise ServiceError(
                "kafka: Java not found. Install a JRE 17+: apt-get install openjdk-17-jre-headless"
            )
        for node in down:
            require_free_port(self.host, node.port, f"kafka {node.node_id}")
            require_free_port(self.host, node.controller_port, f"kafka {node.node_id} controller")
        self.ensure_jars()
        if self.security_dir is not None:
            CertificateAuthority(self.security_dir).ensure()
        configs = {}
        for node in self.nodes:
            node.state_dir.mkdir(parents=True, exist_ok=True)
            configs[node.node_id] = self._render_config(node)
        self._format_storage(configs)
        for node in down:
            self._spawn(node, configs[node.node_id])
        self.wait_ready(timeout)
        self.set_up_principals()

    def set_up_principals(self) -> None:
        """Under TLS: create the SCRAM users the brokers lack and every principal's ACLs (both
        idempotent), as the brokers' super user. Also how brokers started elsewhere (compose)
        get them."""
        if self.security_dir is None:
            return
        admin = AdminClient(self.client_config(BROKER_USER))
        add_missing_users(admin, ensure_passwords(self.security))
        apply_acls(admin)

    def _spawn(self, node: KafkaNode, config: Path) -> None:
        logs = node.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        node.process.spawn(
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

    def _admin(self, bootstrap_servers: str) -> AdminClient:
        config = kafka_client_config(bootstrap_servers, BROKER_USER, self.security)
        return AdminClient({**config, "log_level": 0})

    def answers(self, timeout: float = 2.0) -> bool:
        """True when the cluster returns metadata listing every node as a broker."""
        try:
            brokers = self._admin(self.bootstrap_servers).list_topics(timeout=timeout).brokers
        except Exception:
            return False
        return set(brokers) >= {node.node_id for node in self.nodes}

    def node_answers(self, node: KafkaNode, timeout: float = 2.0) -> bool:
        """True when this node itself returns metadata."""
        try:
            admin = self._admin(f"{node.host}:{node.port}")
            return bool(admin.list_topics(timeout=timeout).brokers)
        except Exception:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            for node in self.nodes:
                if not node.process.running():
                    raise ServiceError(
                        f"kafka: node {node.node_id} exited during start-up; last log lines:\n"
                        f"{node.process.log_tail()}\n(full log: {node.state_dir / 'logs'})"
                    )
            return self.answers()

        if not wait_until(ready, timeout, interval=0.5):
            raise ServiceError(
                f"kafka: brokers did not all answer on {self.bootstrap_servers} within "
                f"{timeout:.0f}s; see {self.state_dir}"
            )

    def stop(self) -> bool:
        """Stop every node at once (one by one, the last would wait for a quorum that left)."""
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            return any(pool.map(lambda node: node.process.stop(timeout=30.0), self.nodes))

    def kill(self, node_id: int | None = None) -> bool:
        """SIGKILL one node, or every node, as a crash would (for recovery tests)."""
        nodes = self.nodes if node_id is None else (self.node(node_id),)
        return any([node.process.kill() for node in nodes])

    def leader_of_most(self, topic: str, timeout: float = 10.0) -> int:
        """The node leading most partitions of `topic` (the lowest id on a tie)."""
        partitions = self._admin(self.bootstrap_servers).list_topics(topic, timeout=timeout)
        leaders = Counter(p.leader for p in partitions.topics[topic].partitions.values())
        return min(leaders, key=lambda node_id: (-leaders[node_id], node_id))

    def status(self) -> str:
        states = []
        for node in self.nodes:
            pid = node.process.pid()
            if pid is None:
                states.append("stopped")
                continue
            answering = "" if self.node_answers(node) else ", not answering yet"
            states.append(f"running (pid {pid}) on {node.host}:{node.port}{answering}")
        if len(states) == 1:
            return states[0]
        return "; ".join(f"node {n.node_id} {s}" for n, s in zip(self.nodes, states, strict=True))
