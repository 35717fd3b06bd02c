"""`python -m infra.stack start|stop|status|kill|topics|schemas|demo [service]`,
`... certs [rotate]`, `... rotate-passwords [principal]`."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from infra.stack.certs import CertificateAuthority
from infra.stack.hdfs import HdfsCluster
from infra.stack.kafka import KafkaBroker
from infra.stack.kafka_rotation import RESTART_ORDER as PASSWORD_RESTART_ORDER
from infra.stack.kafka_rotation import rotate_kafka_passwords
from infra.stack.kafka_users import PRINCIPALS
from infra.stack.local import LocalStack, running_cluster_size
from infra.stack.process import ServiceError
from infra.stack.serving import REAL_SIX_DAYS, api_env, dashboard_env, seed_model, token_file
from infra.stack.spark import SparkCluster
from serving.settings import ApiSettings
from traffic_core.events.registry_client import COMPATIBILITY, register_event_schemas
from traffic_core.kafka.topics import TopicSpec, ensure_topics, topic_layout
from traffic_core.settings import (
    LOCAL_STATE_DIR,
    KafkaSettings,
    PlatformSettings,
    SecuritySettings,
)
from traffic_core.simulation import Simulator, incidents_path
from traffic_core.simulation.simulator import weather_path
from traffic_core.simulation.weather import simulate_weather

SERVICES = ("kafka", "postgres", "registry", "streams", "dagster", "api", "dashboard")
OPTIONAL_SERVICES = ("spark", "hdfs")
"""Started only when named; `stop` and `status` with no names cover them too."""


def service(stack: LocalStack, name: str) -> Any:
    if name == "spark":
        return SparkCluster.from_env(LOCAL_STATE_DIR)
    if name == "hdfs":
        return HdfsCluster.from_env(LOCAL_STATE_DIR)
    return getattr(stack, name)


def create_topics(broker: KafkaBroker) -> dict[str, str]:
    """The platform's topics and the API's publisher election topic (made here by the admin
    principal, since under TLS the API may not create topics), replicated as the broker
    count asks."""
    settings = KafkaSettings()
    admin = AdminClient(broker.client_config("traffic-admin"))
    election = TopicSpec(ApiSettings().publisher_election_topic(), 1)
    return ensure_topics(
        admin, [*topic_layout(settings.topic_partitions), election], broker.replication
    )


def register_schemas(url: str) -> None:
    for subject, ids in register_event_schemas(url).items():
        print(f"  subject {subject}: ids {ids}, compatibility {COMPATIBILITY}")


def start(stack: LocalStack, names: list[str]) -> None:
    if "kafka" in names:
        stack.kafka.start()
        print(f"kafka     {stack.kafka.status()}  ({kafka_security(stack)})")
        for topic, action in create_topics(stack.kafka).items():
            print(f"  topic {topic}: {action}")
    if "postgres" in names:
        stack.postgres.start()
        print(
            f"postgres  {stack.postgres.status()}  (Dagster storage: {stack.postgres.display_url})"
        )
    if "registry" in names:
        stack.registry.start()
        print(f"registry  {stack.registry.status()}  (Confluent schema registry API)")
        register_schemas(stack.registry.url)
    if "streams" in names:
        create_topics(stack.kafka)  # before Quix would create a missing one its own way
        stack.streams.start(env={"KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers})
        print(f"streams   {stack.streams.status()}  (aggregates to traffic-aggregates)")
    if "dagster" in names:
        pg_env = stack.dagster_pg_env() if stack.postgres.running() else {}
        stack.dagster.start(
            env={**pg_env, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers}
        )
        storage = "PostgreSQL" if pg_env else "SQLite"
        print(f"dagster   {stack.dagster.status()}  (instance storage: {storage})")
    if "api" in names:
        if not stack.api.process.running():
            print("api       training a seed model on the real 1-5 March if none is published ...")
            version = seed_model()
            if version:
                print(f"          published seed model {version}")
        stack.api.start(env=api_env(stack))
        print(f"api       {stack.api.status()}")
    if "dashboard" in names:
        stack.dashboard.start(env=dashboard_env(stack))
        print(f"dashboard {stack.dashboard.status()}")
    if "spark" in names:
        cluster = SparkCluster.from_env(LOCAL_STATE_DIR)
        cluster.start()
        print(f"spark     {cluster.status()}  (use it: SPARK_MASTER={cluster.master_url})")
    if "hdfs" in names:
        hdfs = HdfsCluster.from_env(LOCAL_STATE_DIR)
        hdfs.start()
        print(f"hdfs      {hdfs.status()}  (use it: TRAFFIC_LAKE_DIR={hdfs.url}/metr/lake)")


def stop(stack: LocalStack, names: list[str]) -> None:
    for name in reversed((*SERVICES, *OPTIONAL_SERVICES)):
        if name in names:
            stopped = service(stack, name).stop()
            print(f"{name:<9} {'stopped' if stopped else 'was not running'}")


def status(stack: LocalStack) -> None:
    for name in (*SERVICES, *OPTIONAL_SERVICES):
        print(f"{name:<9} {service(stack, name).status()}")


def example_calls(stack: LocalStack) -> str:
    """How to call the API, with demo tokens signed by the stack's secret (in 0600 files)."""
    planner = token_file(stack, "demo-planner", ("planner",))
    auditor = token_file(stack, "demo-auditor", ("auditor",))
    api = stack.api.url
    auth = 'curl -s -H "Authorization: Bearer $TOKEN"'
    return (
        f"API:         {api}/docs  (ready at {api}/v1/ready once the live state has readings)\n"
        f"Dashboard:   {stack.dashboard.url}\n"
        f"Demo tokens (30 days):\n"
        f"  export TOKEN=$(cat {planner})\n"
        f"  export AUDIT_TOKEN=$(cat {auditor})\n"
        f"  {auth} {api}/v1/forecasts/773869\n"
        f"  {auth} '{api}/v1/forecasts?sensor_id=773869&sensor_id=767541'\n"
        f"  {auth} {api}/v1/network/status\n"
        f"  {auth} {api}/v1/alerts\n"
        f'  curl -s -H "Authorization: Bearer $AUDIT_TOKEN" {api}/v1/models/<version>/lineage\n'
        f'  curl -N -H "Authorization: Bearer $TOKEN" {api}/v1/stream/sse\n'
    )


def replay_command(stack: LocalStack, data: str, days: int) -> list[str] | None:
    """The producer command for the demo's data: the real six days, or simulated months."""
    if data == "none":
        return None
    command = [
        sys.executable,
        "-m",
        "traffic_core.ingestion.producer",
        "--bootstrap-servers",
        stack.kafka.bootstrap_servers,
        "--no-progress",
        "--resume",  # a rerun of the demo continues its topic rather than replaying it again
    ]
    if data == "real":
        csv = PlatformSettings().data_dir / "metr-la" / REAL_SIX_DAYS
        return [*command, "--data", str(csv)]
    path = LOCAL_STATE_DIR / "data" / f"simulated-{days}d-207s-seed0-weather.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"simulating {days} days of SYNTHETIC readings and weather, 207 sensors -> {path}")
        simulator = Simulator(days, 207, seed=0)
        weather = simulate_weather(simulator.start, days, seed=0)
        simulator.write(path, weather=weather)
        weather.to_csv(weather_path(path), index=False)
    sidecars = ["--incidents", str(incidents_path(path)), "--weather", str(weather_path(path))]
    return [*command, "--data", str(path), *sidecars]


def kafka_security(stack: LocalStack) -> str:
    security = stack.kafka.security
    if security.tls:
        return (
            f"SASL_SSL, SCRAM users and ACLs; CA {security.ca_file}, "
            f"passwords in {security.kafka_password_file('traffic-admin').parent}"
        )
    return "PLAINTEXT, unauthenticated: loopback only; `make demo-secure` for TLS"


def demo(stack: LocalStack, data: str, days: int) -> None:
    """Bring everything up, replay the data, say where everything is, and bring it all down on
    Ctrl-C or SIGTERM."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    producer: subprocess.Popen | None = None
    try:
        start(stack, list(SERVICES))
        command = replay_command(stack, data, days)
        if command is not None:
            print(f"replaying {data} data into traffic-events: {' '.join(command[3:])}")
            producer = subprocess.Popen(command)
        print(
            f"\nDagster UI:  {stack.dagster.url}  (partitions fill in at "
            f"{stack.dagster.url}/assets/raw_traffic_events?view=partitions)\n"
            f"Kafka:       {stack.kafka.bootstrap_servers}  ({kafka_security(stack)})\n"
            f"PostgreSQL:  {stack.postgres.display_url}\n"
            f"Schemas:     {stack.registry.url}/subjects  (Confluent schema registry API)\n"
            f"Lake:        {PlatformSettings().lake_dir}\n"
            f"Models:      {PlatformSettings().model_dir} (`latest` once a model is published)\n"
            f"Logs:        {', '.join(str(n.state_dir / 'logs') for n in stack.kafka.nodes)}, "
            f"{stack.dagster.process.log_file}, "
            f"{stack.api.process.log_file}, {stack.dashboard.process.log_file}\n"
            f"{example_calls(stack)}"
            "Sensors: kafka_offsets_sensor ingests new offsets, the automation sensor aggregates\n"
            "new days, retrain_on_new_data trains and publishes a model once the runs finish;\n"
            "the API swaps it in without a restart.\n"
            "Press Ctrl-C (or run `make stop`) to stop everything.",
            flush=True,
        )
        done.wait()
    finally:
        print("\nstopping ...")
        if producer is not None and producer.poll() is None:
            producer.terminate()
            producer.wait(30)
        stop(stack, list(SERVICES))


RESTART_ORDER = "postgres, kafka, then dagster, api, dashboard (servers before their clients)"


def deployed_kafka_hosts(name: str, brokers: int) -> tuple[str, ...]:
    """The brokers' host names in a deployment: `name` alone, or `name-1` ... `name-N`."""
    return (name,) if brokers == 1 else tuple(f"{name}-{i}" for i in range(1, brokers + 1))


def certs(action: str, with_ca: bool, kafka_host: str | None = None) -> None:
    """Create the stack's CA and service certificates, or issue new ones (`rotate`); with
    `kafka_host`, also the configuration of a TLS broker run elsewhere under that name."""
    security = SecuritySettings()
    ca = CertificateAuthority(security.security_dir)
    issued = ca.rotate(with_ca) if action == "rotate" else ca.ensure()
    print(f"certificates in {ca.root}: {', '.join(issued) or 'all present, none issued'}")
    if kafka_host is not None:
        brokers = KafkaSettings().brokers
        broker = KafkaBroker(
            state_dir=security.security_dir / "kafka",
            libs_dir=LOCAL_STATE_DIR / "kafka" / "libs",
            host=kafka_host,
            security_dir=security.security_dir,
            brokers=brokers,
            data_dir=Path("/var/lib/kafka/data"),
            node_hosts=deployed_kafka_hosts(kafka_host, brokers),
        )
        for config, arguments in broker.write_deployment_files():
            print(f"kafka broker: {config}; format its storage with @{arguments}")
    if action == "rotate":
        print(f"restart to load them: {RESTART_ORDER}")
        if with_ca:
            print(f"new CA: every client must be given the new {ca.ca_cert}")


def rotate_passwords(parser: argparse.ArgumentParser, principals: list[str]) -> int:
    """New SCRAM passwords for the named Kafka principals (all by default) on the running TLS
    broker and in their files."""
    unknown = set(principals) - set(PRINCIPALS)
    if unknown:
        parser.error(f"unknown principal(s) {sorted(unknown)}; choose from {list(PRINCIPALS)}")
    broker = LocalStack.from_env().kafka
    try:
        rotated = rotate_kafka_passwords(broker, principals or PRINCIPALS)  # type: ignore[arg-type]
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"new passwords for {', '.join(rotated)} in {broker.security.security_dir}")
    print(f"restart to use them: {PASSWORD_RESTART_ORDER}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__)
    parser.add_argument(
        "command",
        choices=[
            "start",
            "stop",
            "status",
            "kill",
            "topics",
            "schemas",
            "demo",
            "certs",
            "rotate-passwords",
        ],
    )
    parser.add_argument(
        "services",
        nargs="*",
        help=f"any of {', '.join(SERVICES)} or all (default), or the optional "
        f"{', '.join(OPTIONAL_SERVICES)}; `kill` is for kafka, as a crash",
    )
    parser.add_argument(
        "--data",
        choices=["real", "simulated", "none"],
        default="real",
        help="demo: replay the real six METR-LA days (default), simulated data, or nothing",
    )
    parser.add_argument("--days", type=int, default=90, help="demo: days of simulated data")
    parser.add_argument(
        "--brokers",
        type=int,
        default=0,
        help="Kafka brokers (default KAFKA_BROKERS, 1); 3 makes a cluster with topics at "
        "replication 3, 2 in sync; stop/status/kill/topics find a running cluster themselves",
    )
    parser.add_argument("--with-ca", action="store_true", help="certs rotate: issue a new CA too")
    parser.add_argument(
        "--kafka-host",
        help="certs: also write the server.properties and SCRAM format arguments of a TLS "
        "broker that answers to this name (docker-compose: kafka)",
    )
    args = parser.parse_args(argv)
    if args.command == "certs":
        if args.services not in ([], ["rotate"]):
            parser.error("certs takes no argument (create what is missing) or `rotate`")
        certs("rotate" if args.services else "ensure", args.with_ca, args.kafka_host)
        return 0
    if args.command == "rotate-passwords":
        return rotate_passwords(parser, args.services)
    unknown = set(args.services) - {*SERVICES, *OPTIONAL_SERVICES, "all"}
    if unknown:
        choices = [*SERVICES, *OPTIONAL_SERVICES, "all"]
        parser.error(f"unknown service(s) {sorted(unknown)}; choose from {choices}")
    everything = list(SERVICES) if args.command == "start" else [*SERVICES, *OPTIONAL_SERVICES]
    names = everything if not args.services or "all" in args.services else args.services
    brokers = args.brokers
    if not brokers and args.command not in ("start", "demo"):
        brokers = running_cluster_size()
    stack = LocalStack.from_env(brokers=brokers)
    try:
        if args.command == "start":
            start(stack, names)
        elif args.command == "stop":
            stop(stack, names)
        elif args.command == "status":
            status(stack)
        elif args.command == "kill":
            print(f"kafka     {'killed' if stack.kafka.kill() else 'was not running'}")
        elif args.command == "topics":
            stack.kafka.set_up_principals()
            for topic, action in create_topics(stack.kafka).items():
                print(f"topic {topic}: {action}")
        elif args.command == "schemas":
            register_schemas(PlatformSettings().schema_registry_url)
        else:
            demo(stack, args.data, args.days)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
