"""`python -m infra.stack start|stop|status|kill|topics|demo [service]`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from confluent_kafka.admin import AdminClient

from infra.stack.local import LocalStack
from infra.stack.process import ServiceError
from traffic_core.kafka.topics import ensure_topics, topic_layout
from traffic_core.settings import KafkaSettings

SERVICES = ("kafka", "postgres", "dagster")


def create_topics(stack: LocalStack) -> dict[str, str]:
    settings = KafkaSettings()
    admin = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers})
    return ensure_topics(
        admin, topic_layout(settings.topic_partitions), settings.replication_factor
    )


def start(stack: LocalStack, names: list[str]) -> None:
    if "kafka" in names:
        stack.kafka.start()
        print(f"kafka     {stack.kafka.status()}")
        for topic, action in create_topics(stack).items():
            print(f"  topic {topic}: {action}")
    if "postgres" in names:
        stack.postgres.start()
        print(f"postgres  {stack.postgres.status()}  (Dagster storage: {stack.postgres.url})")
    if "dagster" in names:
        pg_env = stack.dagster_pg_env() if stack.postgres.running() else {}
        stack.dagster.start(env=pg_env)
        storage = "PostgreSQL" if pg_env else "SQLite"
        print(f"dagster   {stack.dagster.status()}  (instance storage: {storage})")


def stop(stack: LocalStack, names: list[str]) -> None:
    for name in reversed(SERVICES):
        if name in names:
            stopped = getattr(stack, name).stop()
            print(f"{name:<9} {'stopped' if stopped else 'was not running'}")


def status(stack: LocalStack) -> None:
    for name in SERVICES:
        print(f"{name:<9} {getattr(stack, name).status()}")


def demo(stack: LocalStack) -> None:
    """Bring everything up, say where it is, and bring it all down on Ctrl-C or SIGTERM."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        start(stack, list(SERVICES))
        print(
            f"\nDagster UI:  {stack.dagster.url}\n"
            f"Kafka:       {stack.kafka.bootstrap_servers}\n"
            f"PostgreSQL:  {stack.postgres.url}\n"
            f"Logs:        {stack.kafka.state_dir / 'logs'}, {stack.dagster.process.log_file}\n"
            "Press Ctrl-C (or run `make stop`) to stop everything."
        )
        done.wait()
    finally:
        print("\nstopping ...")
        stop(stack, list(SERVICES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status", "kill", "topics", "demo"])
    parser.add_argument(
        "services",
        nargs="*",
        help=f"any of {', '.join(SERVICES)} or all (default); `kill` is for kafka, as a crash",
    )
    args = parser.parse_args(argv)
    unknown = set(args.services) - {*SERVICES, "all"}
    if unknown:
        parser.error(f"unknown service(s) {sorted(unknown)}; choose from {[*SERVICES, 'all']}")
    names = list(SERVICES) if not args.services or "all" in args.services else args.services
    stack = LocalStack.from_env()
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
            for topic, action in create_topics(stack).items():
                print(f"topic {topic}: {action}")
        else:
            demo(stack)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
