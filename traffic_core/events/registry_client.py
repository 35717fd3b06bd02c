"""Schema ids from the schema registry service (Confluent REST API), fetched once and cached.

Each topic's value schemas are registered under the subject `<topic>-value` (Confluent's
topic-name strategy), so any Confluent client finds them. A codec asks the registry for the ids
of the versions this code knows when it is built, and again only for an id it has not seen
(another producer's newer version): decoding never costs an HTTP request per message. An id
found nowhere is not asked about again for `retry_seconds`, and at most `max_asks` unseen ids are
asked about per `retry_seconds` in all, so a stream of made-up ids cannot turn into a stream of
requests (past the budget they are UNKNOWN_SCHEMA_ID, their bytes kept in the DLQ).

With no registry URL configured (an empty `TRAFFIC_SCHEMA_REGISTRY_URL`) the codecs use the
built-in ids of `SCHEMA_IDS`, which equal those a fresh registry assigns when
`register_event_schemas` runs first: offline tools and unit tests keep working.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping
from functools import cache
from typing import Any, cast

import httpx
from fastavro import parse_schema

from traffic_core.events.schema import (
    AGGREGATE,
    INCIDENT,
    READING,
    SCHEMA_DIR,
    WEATHER,
    RegisteredSchema,
    SchemaRegistry,
    load_event_schema,
    local_registry,
    schema_files,
)
from traffic_core.kafka.topics import (
    TRAFFIC_AGGREGATES,
    TRAFFIC_EVENTS,
    TRAFFIC_INCIDENTS,
    WEATHER_OBSERVATIONS,
)
from traffic_core.settings import PlatformSettings, SecuritySettings

TOPIC_SCHEMAS: Mapping[str, str] = {
    TRAFFIC_EVENTS: READING,
    TRAFFIC_INCIDENTS: INCIDENT,
    WEATHER_OBSERVATIONS: WEATHER,
    TRAFFIC_AGGREGATES: AGGREGATE,
}
"""Which event schema each topic's values follow: a topic with a schema is one line here."""
COMPATIBILITY = "BACKWARD"
"""New versions must read data written with the previous one: consumers upgrade first."""
MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryError(RuntimeError):
    """The registry refused a request or could not be reached."""


def registry_subject(topic: str) -> str:
    return f"{topic}-value"


def schema_text(name: str, version: int) -> str:
    """The schema as written in its .avsc file (what the registry stores and serves)."""
    return (SCHEMA_DIR / f"{name}.v{version}.avsc").read_text()


class RegistryHttp:
    """The few Confluent REST calls the platform makes."""

    def __init__(
        self, url: str, timeout: float = 10.0, security: SecuritySettings | None = None
    ) -> None:
        self.url = url.rstrip("/")
        security = security or SecuritySettings()
        # Under TRAFFIC_SECURITY=tls the registry's certificate is checked against the stack's
        # CA only (not the system store), as every other client does.
        verify: ssl.SSLContext | bool = True
        if security.tls and self.url.startswith("https"):
            verify = ssl.create_default_context(cafile=security.ca_file)
        self._client = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Accept": MEDIA_TYPE}, verify=verify
        )

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._client.request(
                method, path, json=body, headers={"Content-Type": MEDIA_TYPE}
            )
        except httpx.HTTPError as exc:
            raise SchemaRegistryError(f"schema registry {self.url}: {exc!r}") from exc
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise SchemaRegistryError(
                f"schema registry {self.url}: {method} {path} -> {response.status_code} "
                f"{response.text}"
            )
        return response.json()


class RemoteSchemaRegistry(SchemaRegistry):
    """The registry's ids for the schema versions this code knows, plus any other id of our
    subjects fetched on first sight. Wire ids are the registry's; versions stay the files'."""

    def __init__(self, http: RegistryHttp, retry_seconds: float = 30.0, max_asks: int = 10) -> None:
        super().__init__()
        self.http = http
        self.retry_seconds = retry_seconds
        self.max_asks = max_asks
        self._topics = {registry_subject(t): name for t, name in TOPIC_SCHEMAS.items()}
        self._fetched: dict[int, RegisteredSchema] = {}
        self._asked: dict[int, float] = {}  # unseen id -> when it was last asked about
        for topic, name in TOPIC_SCHEMAS.items():
            for version in schema_files()[name]:
                found = http.call(
                    "POST",
                    f"/subjects/{registry_subject(topic)}",
                    {"schema": schema_text(name, version)},
                )
                if found is None:
                    raise SchemaRegistryError(
                        f"{name} v{version} is not registered under {registry_subject(topic)} "
                        f"at {http.url}: start the registry with the stack, which registers "
                        f"every event schema"
                    )
                self.register(found["id"], name, version, load_event_schema(name, version))

    def get(self, schema_id: int) -> RegisteredSchema | None:
        return super().get(schema_id) or self._fetched.get(schema_id) or self._fetch(schema_id)

    def _may_ask(self, schema_id: int) -> bool:
        """Within the budget, and this id not asked about lately; records the ask."""
        now = time.monotonic()
        self._asked = {i: at for i, at in self._asked.items() if now - at < self.retry_seconds}
        if schema_id in self._asked or len(self._asked) >= self.max_asks:
            return False
        self._asked[schema_id] = now
        return True

    def _fetch(self, schema_id: int) -> RegisteredSchema | None:
        """Ask the registry which of our subjects uses an unseen id, and its schema."""
        if not self._may_ask(schema_id):
            return None
        uses = self.http.call("GET", f"/schemas/ids/{schema_id}/versions") or []
        ours = [u for u in uses if u["subject"] in self._topics]
        found = self.http.call("GET", f"/schemas/ids/{schema_id}") if ours else None
        if found is None:
            return None
        entry = RegisteredSchema(
            schema_id,
            self._topics[ours[0]["subject"]],
            ours[0]["version"],
            _parsed(found["schema"]),
        )
        self._fetched[schema_id] = entry
        return entry


def _parsed(text: str) -> dict[str, Any]:
    """A record schema served by the registry, parsed (every event contract is a record)."""
    return cast(dict[str, Any], parse_schema(json.loads(text)))


def register_event_schemas(url: str) -> dict[str, list[int]]:
    """Register every topic's schema versions (oldest first) with BACKWARD compatibility;
    idempotent. Returns the ids per registry subject."""
    http = RegistryHttp(url)
    ids: dict[str, list[int]] = {}
    for topic, name in TOPIC_SCHEMAS.items():
        subject = registry_subject(topic)
        http.call("PUT", f"/config/{subject}", {"compatibility": COMPATIBILITY})
        ids[subject] = [
            http.call("POST", f"/subjects/{subject}/versions", {"schema": schema_text(name, v)})[
                "id"
            ]
            for v in schema_files()[name]
        ]
    return ids


@cache
def remote_registry(url: str) -> RemoteSchemaRegistry:
    """One cached registry view per URL and process."""
    return RemoteSchemaRegistry(RegistryHttp(url))


def default_registry() -> SchemaRegistry:
    """The configured registry's ids, or the built-in ones when no URL is configured."""
    url = PlatformSettings().schema_registry_url
    return remote_registry(url) if url else local_registry()
