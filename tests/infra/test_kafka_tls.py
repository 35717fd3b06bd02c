"""The broker under TRAFFIC_SECURITY=tls, against a real broker: strangers are refused at the
door, and each principal can do what its role needs and is denied one step beyond it."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from infra.stack.__main__ import create_topics
from infra.stack.certs import CertificateAuthority
from infra.stack.kafka import KafkaBroker
from infra.stack.kafka_rotation import rotate_kafka_passwords
from infra.stack.kafka_users import PRINCIPALS
from traffic_core.kafka.topics import (
    TRAFFIC_AGGREGATES,
    TRAFFIC_ALERTS,
    TRAFFIC_EVENTS,
    TRAFFIC_EVENTS_DLQ,
    TRAFFIC_INCIDENTS,
    TRAFFIC_PREDICTIONS,
    WEATHER_OBSERVATIONS,
)
from traffic_core.settings import KafkaPrincipal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OK = None
Code = int | None


@pytest.fixture(scope="module")
def broker(kafka_tls_broker: KafkaBroker) -> KafkaBroker:
    """The TLS broker with the platform's topics (made by the admin principal, as the stack
    does), each holding a record so readers have something to read."""
    create_topics(kafka_tls_broker)
    seeder = Producer(kafka_tls_broker.client_config("traffic-broker"))
    for topic in (TRAFFIC_EVENTS, TRAFFIC_INCIDENTS, WEATHER_OBSERVATIONS, TRAFFIC_EVENTS_DLQ):
        seeder.produce(topic, b"seed", partition=0)
    assert seeder.flush(30) == 0
    return kafka_tls_broker


def _refused(config: dict[str, Any]) -> list[KafkaError]:
    """The errors a client met when its metadata request, which must fail, was refused."""
    seen: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": seen.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=8)
    admin.poll(1)  # error callbacks are served by poll
    assert seen
    return seen


# -- at the door ----------------------------------------------------------------------------


def test_a_plaintext_client_is_refused(broker: KafkaBroker) -> None:
    _refused({"bootstrap.servers": broker.bootstrap_servers})


def test_a_tls_client_without_credentials_is_refused(broker: KafkaBroker) -> None:
    config = broker.client_config("traffic-producer")
    anonymous = {k: v for k, v in config.items() if not k.startswith("sasl.")}
    _refused({**anonymous, "security.protocol": "SSL"})


def test_a_wrong_password_fails_authentication(broker: KafkaBroker) -> None:
    config = {**broker.client_config("traffic-producer"), "sasl.password": "not-the-password"}
    seen = _refused(config)
    assert KafkaError._AUTHENTICATION in {e.code() for e in seen}


def test_a_broker_certificate_from_another_ca_is_not_trusted(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    stranger = CertificateAuthority(tmp_path)
    stranger.ensure()
    config = {**broker.client_config("traffic-producer"), "ssl.ca.location": str(stranger.ca_cert)}
    seen = _refused(config)
    assert KafkaError._SSL in {e.code() for e in seen}
    assert any("certificate verify failed" in e.str() for e in seen)


def test_the_controller_listener_refuses_a_client_without_a_certificate(
    broker: KafkaBroker,
) -> None:
    config = broker.client_config("traffic-admin")
    controller = f"{broker.host}:{broker.controller_port}"
    tls_only = {k: v for k, v in config.items() if not k.startswith("sasl.")}
    seen = _refused({**tls_only, "security.protocol": "SSL", "bootstrap.servers": controller})
    assert any("bad certificate" in e.str() for e in seen)


# -- what each principal may do, and one step beyond ------------------------------------------


def write(principal: KafkaPrincipal, topic: str) -> Callable[[KafkaBroker], Code]:
    def act(broker: KafkaBroker) -> Code:
        delivered: list[KafkaError | None] = []
        producer = Producer(
            {
                **broker.client_config(principal),
                "enable.idempotence": False,
                "message.timeout.ms": 15_000,
                "log_level": 0,
            }
        )
        producer.produce(topic, b"probe", on_delivery=lambda err, _msg: delivered.append(err))
        producer.flush(30)
        assert len(delivered) == 1
        return None if delivered[0] is None else delivered[0].code()

    return act


def read(principal: KafkaPrincipal, topic: str, group: str) -> Callable[[KafkaBroker], Code]:
    """Join `group`, read a record of `topic` and commit past it."""

    def act(broker: KafkaBroker) -> Code:
        consumer = Consumer(
            {
                **broker.client_config(principal),
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        try:
            consumer.subscribe([topic])
            for _ in range(120):
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error() is not None:
                    return message.error().code()
                consumer.commit(message=message, asynchronous=False)
                return None
            raise AssertionError(f"{principal} read nothing from {topic} in 60 s")
        except KafkaException as exc:
            return exc.args[0].code()
        finally:
            consumer.close()

    return act


def in_transaction(
    principal: KafkaPrincipal, transactional_id: str
) -> Callable[[KafkaBroker], Code]:
    """Write a reject to the DLQ in a transaction under `transactional_id`."""

    def act(broker: KafkaBroker) -> Code:
        producer = Producer(
            {
                **broker.client_config(principal),
                "transactional.id": transactional_id,
                "log_level": 0,
            }
        )
        try:
            producer.init_transactions(60)
            producer.begin_transaction()
            producer.produce(TRAFFIC_EVENTS_DLQ, b"probe")
            producer.commit_transaction(60)
            return None
        except KafkaException as exc:
            return exc.args[0].code()

    return act


def manage_topic(
    principal: KafkaPrincipal, prefix: str = "scratch-", delete: bool = True
) -> Callable[[KafkaBroker], Code]:
    """Create a topic named `prefix` + something new, and delete it again if asked."""

    def act(broker: KafkaBroker) -> Code:
        admin = AdminClient(broker.client_config(principal))
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        try:
            admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
            if delete:
                admin.delete_topics([name])[name].result(30)
            return None
        except KafkaException as exc:
            return exc.args[0].code()

    return act


def grant_itself(principal: KafkaPrincipal) -> Callable[[KafkaBroker], Code]:
    """Try to give itself read access to the readings."""

    def act(broker: KafkaBroker) -> Code:
        binding = AclBinding(
            ResourceType.TOPIC,
            TRAFFIC_EVENTS,
            ResourcePatternType.LITERAL,
            f"User:{principal}",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        )
        admin = AdminClient(broker.client_config(principal))
        try:
            next(iter(admin.create_acls([binding]).values())).result()
            return None
        except KafkaException as exc:
            return exc.args[0].code()

    return act


TOPIC_DENIED = KafkaError.TOPIC_AUTHORIZATION_FAILED
GROUP_DENIED = KafkaError.GROUP_AUTHORIZATION_FAILED
CLUSTER_DENIED = KafkaError.CLUSTER_AUTHORIZATION_FAILED
TXN_DENIED = KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED

PRODUCER, LAKE, API, STREAM, ADMIN = (
    "traffic-producer",
    "traffic-lake-writer",
    "traffic-api",
    "traffic-stream",
    "traffic-admin",
)
STREAM_GROUP = "traffic-stream-aggregates"
STREAM_CHANGELOG = f"changelog__{STREAM_GROUP}--{TRAFFIC_EVENTS}--"
"""Quix Streams' name for a state store's changelog of the processor's group."""
EVENTS, DLQ = TRAFFIC_EVENTS, TRAFFIC_EVENTS_DLQ

CASES: list[tuple[str, Callable[[KafkaBroker], Code], Code]] = [
    # producer: writes the input topics (and its own rejects to the DLQ), nothing else
    ("producer writes readings", write(PRODUCER, EVENTS), OK),
    ("producer writes incidents", write(PRODUCER, TRAFFIC_INCIDENTS), OK),
    ("producer writes weather", write(PRODUCER, WEATHER_OBSERVATIONS), OK),
    ("producer writes its rejects", write(PRODUCER, DLQ), OK),
    ("producer may not forge forecasts", write(PRODUCER, TRAFFIC_PREDICTIONS), TOPIC_DENIED),
    ("producer may not read", read(PRODUCER, EVENTS, "traffic-lake-ingest"), GROUP_DENIED),
    # lake writers: read the inputs in their groups, write the DLQ in their transactions
    ("lake reads readings", read(LAKE, EVENTS, "traffic-lake-ingest"), OK),
    ("lake reads incidents", read(LAKE, TRAFFIC_INCIDENTS, "traffic-lake-writers"), OK),
    ("lake reads weather", read(LAKE, WEATHER_OBSERVATIONS, "traffic-lake-sensor"), OK),
    ("lake writes the DLQ in a transaction", in_transaction(LAKE, "traffic-lake-writers.w1"), OK),
    ("lake may not write readings", write(LAKE, EVENTS), TOPIC_DENIED),
    ("lake may not read the DLQ", read(LAKE, DLQ, "traffic-lake-ingest"), TOPIC_DENIED),
    ("lake may not join another group", read(LAKE, EVENTS, "someone-else"), GROUP_DENIED),
    ("lake may not take another txn id", in_transaction(LAKE, "someone-else.w1"), TXN_DENIED),
    # API: reads the readings, writes forecasts and alerts
    ("api reads readings", read(API, EVENTS, "traffic-api-live-test"), OK),
    ("api writes forecasts", write(API, TRAFFIC_PREDICTIONS), OK),
    ("api writes alerts", write(API, TRAFFIC_ALERTS), OK),
    ("api may not write readings", write(API, EVENTS), TOPIC_DENIED),
    ("api may not read the DLQ", read(API, DLQ, "traffic-api-live-test"), TOPIC_DENIED),
    ("api may not join the lake's group", read(API, EVENTS, "traffic-lake-ingest"), GROUP_DENIED),
    # stream processor: reads readings in its group, writes aggregates, rejects and its own
    # state changelogs in its transactions
    ("stream reads readings", read(STREAM, EVENTS, STREAM_GROUP), OK),
    ("stream writes aggregates", write(STREAM, TRAFFIC_AGGREGATES), OK),
    ("stream writes the DLQ in a transaction", in_transaction(STREAM, f"{STREAM_GROUP}.i1"), OK),
    ("stream creates its changelog", manage_topic(STREAM, STREAM_CHANGELOG, delete=False), OK),
    ("stream may not write readings", write(STREAM, EVENTS), TOPIC_DENIED),
    ("stream may not forge forecasts", write(STREAM, TRAFFIC_PREDICTIONS), TOPIC_DENIED),
    ("stream may not read the DLQ", read(STREAM, DLQ, STREAM_GROUP), TOPIC_DENIED),
    (
        "stream may not join the lake's group",
        read(STREAM, EVENTS, "traffic-lake-ingest"),
        GROUP_DENIED,
    ),
    (
        "stream may not take the lake's txn id",
        in_transaction(STREAM, "traffic-lake-writers.w1"),
        TXN_DENIED,
    ),
    ("stream may not create other topics", manage_topic(STREAM, delete=False), TOPIC_DENIED),
    (
        "stream may not create another group's changelog",
        manage_topic(STREAM, "changelog__traffic-lake-ingest--", delete=False),
        TOPIC_DENIED,
    ),
    # admin: manages topics, touches no data and no ACLs
    ("admin creates and deletes topics", manage_topic(ADMIN), OK),
    ("admin may not write readings", write(ADMIN, EVENTS), TOPIC_DENIED),
    ("admin may not read readings", read(ADMIN, EVENTS, "traffic-lake-ingest"), GROUP_DENIED),
    ("admin may not change ACLs", grant_itself(ADMIN), CLUSTER_DENIED),
    # and nobody else manages topics or ACLs
    ("api may not create topics", manage_topic(API), TOPIC_DENIED),
    ("lake may not change ACLs", grant_itself(LAKE), CLUSTER_DENIED),
]


@pytest.mark.parametrize(("action", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_principal_can_do_its_role_and_nothing_beyond(
    broker: KafkaBroker, action: Callable[[KafkaBroker], Code], expected: Code
) -> None:
    assert action(broker) == expected


def test_secrets_are_generated_private_and_distinct(broker: KafkaBroker) -> None:
    security = broker.security
    files = [security.kafka_password_file(p) for p in PRINCIPALS]
    config = broker.state_dir / "server.properties"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*files, config]}
    assert modes == {p.name: 0o600 for p in [*files, config]}
    passwords = {p.read_text().strip() for p in files}
    assert len(passwords) == len(PRINCIPALS) and min(map(len, passwords)) >= 40
    assert "allow.everyone.if.no.acl.found=false" in config.read_text().splitlines()
    assert not (broker.state_dir / "scram-users.args").exists()  # used for format, then removed


def test_a_rotated_password_replaces_the_old_one(broker: KafkaBroker) -> None:
    """`rotate-passwords`: the broker refuses the old password and takes the new one, which is
    in the principal's 0600 file (clients read it from there)."""
    principal: KafkaPrincipal = "traffic-producer"
    password_file = broker.security.kafka_password_file(principal)
    old = broker.client_config(principal)
    assert rotate_kafka_passwords(broker, [principal]) == [principal]
    new = broker.client_config(principal)
    assert new["sasl.password"] != old["sasl.password"]
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert not password_file.with_name(password_file.name + ".new").exists()
    seen = _refused({**old, "client.id": "old-password"})
    assert KafkaError._AUTHENTICATION in {e.code() for e in seen}
    assert write(principal, TRAFFIC_EVENTS)(broker) is OK
