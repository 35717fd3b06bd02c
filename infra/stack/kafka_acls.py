"""Least-privilege ACLs of the TLS broker, one short list of grants per principal.

Nothing is allowed without an ACL (`allow.everyone.if.no.acl.found=false`), so each principal
can do exactly what its role needs: the producer writes the input topics, the lake writers read
them and write the DLQ under their own groups and transactional ids, the API reads the readings
and writes its forecasts and alerts, the stream processor reads the readings and writes its
aggregates, its rejects and its own state topics, and the admin manages topics but reads and
writes no data.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from serving.settings import ApiSettings
from traffic_core.kafka.topics import (
    TRAFFIC_AGGREGATES,
    TRAFFIC_EVENTS,
    TRAFFIC_EVENTS_DLQ,
    TRAFFIC_INCIDENTS,
    WEATHER_OBSERVATIONS,
)
from traffic_core.settings import KafkaPrincipal

Op = AclOperation
INPUT_TOPICS = (TRAFFIC_EVENTS, TRAFFIC_INCIDENTS, WEATHER_OBSERVATIONS)
LAKE_PREFIX = "traffic-lake-"
"""Groups and transactional ids of the lake writers: the Dagster asset's traffic-lake-ingest,
the sensor's traffic-lake-sensor, the workers' traffic-lake-writers and their
traffic-lake-writers.<worker> transactional ids."""
API_LIVE_PREFIX = "traffic-api-live-"
STREAM_PREFIX = "traffic-stream-"
"""Consumer groups of the stream processor (traffic-stream-aggregates by default) and their
transactional ids (<group>.<instance>)."""
STREAM_INTERNAL_TOPICS = (f"changelog__{STREAM_PREFIX}", f"repartition__{STREAM_PREFIX}")
"""The state changelog and repartition topics Quix Streams creates, named
<kind>__<group>--<topic>--<store>: only the processor's own groups' topics."""
CLUSTER = "kafka-cluster"
STATE_TOPIC_OPS = (Op.CREATE, Op.READ, Op.WRITE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)


@dataclass(frozen=True)
class Grant:
    resource: ResourceType
    names: tuple[str, ...]
    operations: tuple[AclOperation, ...]
    pattern: ResourcePatternType = ResourcePatternType.LITERAL


def _topics(*names: str, ops: tuple[AclOperation, ...]) -> Grant:
    return Grant(ResourceType.TOPIC, names, ops)


def _prefixed(resource: ResourceType, prefix: str, *ops: AclOperation) -> Grant:
    return Grant(resource, (prefix,), ops, ResourcePatternType.PREFIXED)


def role_grants() -> dict[KafkaPrincipal, list[Grant]]:
    api = ApiSettings()
    return {
        "traffic-producer": [
            # The producer's own rejects (impossible values in the file) go to the DLQ as well.
            _topics(*INPUT_TOPICS, TRAFFIC_EVENTS_DLQ, ops=(Op.WRITE, Op.DESCRIBE)),
        ],
        "traffic-lake-writer": [
            _topics(*INPUT_TOPICS, ops=(Op.READ, Op.DESCRIBE)),
            _topics(TRAFFIC_EVENTS_DLQ, ops=(Op.WRITE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)),
            _prefixed(ResourceType.GROUP, LAKE_PREFIX, Op.READ, Op.DESCRIBE),
            Grant(ResourceType.GROUP, ("traffic-freshness-check",), (Op.READ, Op.DESCRIBE)),
            _prefixed(ResourceType.TRANSACTIONAL_ID, LAKE_PREFIX, Op.WRITE, Op.DESCRIBE),
        ],
        "traffic-api": [
            _topics(api.events_topic, api.publisher_election_topic(), ops=(Op.READ, Op.DESCRIBE)),
            _topics(api.predictions_topic, api.alerts_topic, ops=(Op.WRITE, Op.DESCRIBE)),
            _prefixed(ResourceType.GROUP, API_LIVE_PREFIX, Op.READ, Op.DESCRIBE),
            Grant(ResourceType.GROUP, (api.publisher_group(),), (Op.READ, Op.DESCRIBE)),
        ],
        "traffic-stream": [
            _topics(TRAFFIC_EVENTS, ops=(Op.READ, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)),
            _topics(
                TRAFFIC_AGGREGATES,
                TRAFFIC_EVENTS_DLQ,
                ops=(Op.WRITE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS),
            ),
            *(
                _prefixed(ResourceType.TOPIC, prefix, *STATE_TOPIC_OPS)
                for prefix in STREAM_INTERNAL_TOPICS
            ),
            _prefixed(ResourceType.GROUP, STREAM_PREFIX, Op.READ, Op.DESCRIBE),
            _prefixed(ResourceType.TRANSACTIONAL_ID, STREAM_PREFIX, Op.WRITE, Op.DESCRIBE),
        ],
        "traffic-admin": [
            Grant(ResourceType.BROKER, (CLUSTER,), (Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)),
            Grant(
                ResourceType.TOPIC,
                ("*",),
                (
                    Op.CREATE,
                    Op.DELETE,
                    Op.ALTER,
                    Op.DESCRIBE,
                    Op.DESCRIBE_CONFIGS,
                    Op.ALTER_CONFIGS,
                ),
            ),
        ],
    }


def acl_bindings() -> list[AclBinding]:
    return [
        AclBinding(
            grant.resource,
            name,
            grant.pattern,
            f"User:{principal}",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for principal, grants in role_grants().items()
        for grant in grants
        for name in grant.names
        for operation in grant.operations
    ]


def apply_acls(admin: AdminClient, timeout: float = 30.0) -> int:
    """Create every binding (creating an existing one is a no-op); returns how many."""
    bindings = acl_bindings()
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result()
    return len(bindings)
