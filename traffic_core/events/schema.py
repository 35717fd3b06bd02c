"""Versioned Avro contracts for traffic events, their wire ids and compatibility checks.

Schemas live in ``schemas/<subject>.v<N>.avsc``. Wire ids come from the schema registry service
(`registry_client`); ``SCHEMA_IDS`` are the ids a fresh registry assigns them in registration
order, used only where no registry is configured: never renumber or reuse one, only append.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import IO, Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import load_schema
from fastavro.types import Schema

READING = "traffic_reading"
INCIDENT = "incident_report"
WEATHER = "weather_observation"
AGGREGATE = "traffic_aggregate"

SCHEMA_DIR = Path(__file__).with_name("schemas")
SCHEMA_IDS: Mapping[int, tuple[str, int]] = {
    1: (READING, 1),
    2: (INCIDENT, 1),
    3: (WEATHER, 1),
    4: (AGGREGATE, 1),
}

_FILE_NAME = re.compile(r"^(?P<subject>\w+)\.v(?P<version>\d+)\.avsc$")


class Reason(StrEnum):
    """Why a message was rejected. Values travel as DLQ header values, so they are contract."""

    UNDECODABLE = "UNDECODABLE"
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"
    OVERSIZED_MESSAGE = "OVERSIZED_MESSAGE"
    MISSING_FIELD = "MISSING_FIELD"
    WRONG_TYPE = "WRONG_TYPE"
    NAN_SPEED = "NAN_SPEED"
    NEGATIVE_SPEED = "NEGATIVE_SPEED"
    SPEED_TOO_HIGH = "SPEED_TOO_HIGH"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNKNOWN_SENSOR = "UNKNOWN_SENSOR"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    TIMESTAMP_TOO_OLD = "TIMESTAMP_TOO_OLD"
    TIMESTAMP_BEFORE_FLOOR = "TIMESTAMP_BEFORE_FLOOR"
    """Event time before the earliest the platform accepts (default: METR-LA's first day)."""
    LATE_READING = "LATE_READING"
    """Event time further behind the stream's watermark than the allowed lateness."""
    OUTSIDE_PARTITIONS = "OUTSIDE_PARTITIONS"
    """Event date outside the lake asset's partitions (a day Dagster does not know)."""
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    """A JSON message with fields the schema lacks, under the reject policy."""
    DUPLICATE_READING = "DUPLICATE_READING"
    KEY_MISMATCH = "KEY_MISMATCH"
    """A reading whose Kafka key is not its sensor id: per-sensor stream state lives in the
    key's partition, so it cannot be windowed with its sensor."""


def speed_from_metr_la(raw: float) -> float | None:
    """Map a METR-LA speed cell to the contract: the dataset stores missing readings as 0.0."""
    return None if raw == 0.0 or math.isnan(raw) else float(raw)


def schema_files() -> dict[str, list[int]]:
    """Versions present on disk per subject, ascending."""
    found: dict[str, list[int]] = {}
    for path in SCHEMA_DIR.glob("*.avsc"):
        if match := _FILE_NAME.match(path.name):
            found.setdefault(match["subject"], []).append(int(match["version"]))
    return {subject: sorted(versions) for subject, versions in sorted(found.items())}


@cache
def load_event_schema(subject: str, version: int) -> dict[str, Any]:
    """Parsed schema of one version (cached; treat as read-only)."""
    return _as_record_schema(load_schema(str(SCHEMA_DIR / f"{subject}.v{version}.avsc")))


def _as_record_schema(schema: Schema) -> dict[str, Any]:
    """fastavro types a parsed schema as any Avro schema (name, union list or dict); every event
    contract is a record, so its parsed form is a dict."""
    return cast(dict[str, Any], schema)


def read_record(
    stream: IO[bytes], writer: dict[str, Any], reader: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`schemaless_reader` for record schemas: fastavro types the result as any Avro value, but
    reading a record schema always yields a dict."""
    return cast(dict[str, Any], schemaless_reader(stream, writer, reader))


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    schema_id: int
    subject: str
    version: int
    schema: dict[str, Any]


class SchemaRegistry:
    """Wire id -> parsed schema, as this process knows them."""

    def __init__(self) -> None:
        self._by_id: dict[int, RegisteredSchema] = {}

    def register(
        self, schema_id: int, subject: str, version: int, schema: Mapping[str, Any]
    ) -> RegisteredSchema:
        if schema_id in self._by_id:
            raise ValueError(f"schema id {schema_id} is already registered")
        if any(e.subject == subject and e.version == version for e in self._by_id.values()):
            raise ValueError(f"{subject} v{version} is already registered")
        entry = RegisteredSchema(
            schema_id, subject, version, _as_record_schema(parse_schema(dict(schema)))
        )
        self._by_id[schema_id] = entry
        return entry

    def get(self, schema_id: int) -> RegisteredSchema | None:
        return self._by_id.get(schema_id)

    def versions(self, subject: str) -> list[RegisteredSchema]:
        return sorted(
            (e for e in self._by_id.values() if e.subject == subject), key=lambda e: e.version
        )

    def latest(self, subject: str) -> RegisteredSchema:
        if not (versions := self.versions(subject)):
            raise KeyError(f"no schema registered for {subject!r}")
        return versions[-1]


@cache
def local_registry() -> SchemaRegistry:
    """The built-in ids, for processes configured without a registry service."""
    registry = SchemaRegistry()
    for schema_id, (subject, version) in SCHEMA_IDS.items():
        registry.register(schema_id, subject, version, load_event_schema(subject, version))
    return registry


# Compatibility -------------------------------------------------------------------------------

_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_NAMED = {"record", "enum", "fixed"}
_SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": True,
    "int": 7,
    "long": 1_330_560_000_000,
    "float": 1.5,
    "double": 64.375,
    "string": "773869",
    "bytes": b"\x01",
}


def check_compatibility(
    writer_schema: Mapping[str, Any], reader_schema: Mapping[str, Any]
) -> list[str]:
    """Problems preventing `reader_schema` from reading record data written with `writer_schema`.

    An empty list means compatible. Structural rules (Avro resolution, plus logical types must not
    change since that silently rescales values) are backed by an actual fastavro round trip of
    deterministic samples that visit every union branch and enum symbol of the writer.
    """
    writer = _as_record_schema(parse_schema(dict(writer_schema)))
    reader = _as_record_schema(parse_schema(dict(reader_schema)))
    names = (_named_types(writer, {}), _named_types(reader, {}))
    return _structural(writer, reader, "$", names) + _round_trip(writer, reader, names[0])


def _named_types(schema: Any, found: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, found)
    elif isinstance(schema, dict):
        if schema["type"] in _NAMED:
            found[schema["name"]] = schema
        for field in schema.get("fields", ()):
            _named_types(field["type"], found)
        for key in ("items", "values"):
            if key in schema:
                _named_types(schema[key], found)
    return found


def _deref(schema: Any, named: dict[str, Any]) -> Any:
    return named.get(schema, schema) if isinstance(schema, str) else schema


def _kind(schema: Any) -> str:
    return schema["type"] if isinstance(schema, dict) else schema


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _structural(w: Any, r: Any, path: str, names: tuple[dict, dict]) -> list[str]:
    w, r = _deref(w, names[0]), _deref(r, names[1])
    if isinstance(r, list):
        branches = w if isinstance(w, list) else [w]
        return [
            f"{path}: writer type {_describe(b)} matches no reader union branch"
            for b in branches
            if all(_structural(b, rb, path, names) for rb in r)
        ]
    if isinstance(w, list):  # the reader narrowed a union: every branch must still fit
        return [
            f"{path}: writer union branch {_describe(b)} is not readable as {_describe(r)}"
            for b in w
            if _structural(b, r, path, names)
        ]
    if _logical(w) != _logical(r):
        return [f"{path}: logical type changed from {_logical(w)} to {_logical(r)}"]
    wk, rk = _kind(w), _kind(r)
    if wk != rk:
        return [] if (wk, rk) in _PROMOTIONS else [f"{path}: type changed from {wk} to {rk}"]
    if wk in _NAMED and w["name"] != r["name"] and w["name"] not in _aliases(r):
        return [f"{path}: {wk} renamed from {w['name']} to {r['name']} without alias"]
    if wk == "record":
        return _record_problems(w, r, path, names)
    if wk == "enum":
        lost = [s for s in w["symbols"] if s not in r["symbols"]]
        if lost and "default" not in r:
            return [f"{path}: enum symbols removed without default: {lost}"]
    if wk == "fixed" and w["size"] != r["size"]:
        return [f"{path}: fixed size changed from {w['size']} to {r['size']}"]
    if wk == "array":
        return _structural(w["items"], r["items"], f"{path}[]", names)
    if wk == "map":
        return _structural(w["values"], r["values"], f"{path}{{}}", names)
    return []


def _record_problems(w: dict, r: dict, path: str, names: tuple[dict, dict]) -> list[str]:
    written = {f["name"]: f for f in w["fields"]}
    problems = []
    for field in r["fields"]:
        field_path = f"{path}.{field['name']}"
        candidates = [field["name"], *field.get("aliases", ())]
        source = next((written[n] for n in candidates if n in written), None)
        if source is not None:
            problems += _structural(source["type"], field["type"], field_path, names)
        elif "default" not in field:
            problems.append(f"{field_path}: new field has no default")
    return problems


def _aliases(named: dict) -> set[str]:
    """Full names of a named type's aliases: bare ones live in the type's own namespace."""
    namespace = named["name"].rpartition(".")[0]
    return {
        a if "." in a or not namespace else f"{namespace}.{a}" for a in named.get("aliases", ())
    }


def _describe(schema: Any) -> str:
    return schema if isinstance(schema, str) else schema.get("name", _kind(schema))


def _round_trip(writer: dict, reader: dict, named: dict[str, Any]) -> list[str]:
    """Prove resolution on real bytes; compare fields whose type is unchanged."""
    reader_types = {f["name"]: f["type"] for f in reader["fields"]}
    unchanged = [f["name"] for f in writer["fields"] if reader_types.get(f["name"]) == f["type"]]
    problems = []
    for index, sample in enumerate(_samples(writer, named)):
        buffer = io.BytesIO()
        schemaless_writer(buffer, writer, sample)
        body = buffer.getvalue()
        try:
            resolved = read_record(io.BytesIO(body), writer, reader)
        except Exception as exc:  # any resolution failure is the finding itself
            problems.append(f"sample {index}: reader failed: {exc}")
            continue
        original = read_record(io.BytesIO(body), writer)
        problems += [
            f"sample {index}: field {name} changed from {original[name]!r} to {resolved[name]!r}"
            for name in unchanged
            if resolved[name] != original[name]
        ]
    return problems


def _samples(schema: dict, named: dict[str, Any]) -> list[Any]:
    return [_sample(schema, k, named) for k in range(_width(schema, named))]


def _width(schema: Any, named: dict[str, Any]) -> int:
    """Most variants (union branches, enum symbols) any single position of the schema has."""
    schema = _deref(schema, named)
    if isinstance(schema, list):
        return max(len(schema), *(_width(b, named) for b in schema))
    kind = _kind(schema)
    if kind == "record":
        return max((_width(f["type"], named) for f in schema["fields"]), default=1)
    if kind == "enum":
        return len(schema["symbols"])
    if kind in ("array", "map"):
        return _width(schema["items" if kind == "array" else "values"], named)
    return 1


def _sample(schema: Any, k: int, named: dict[str, Any]) -> Any:
    schema = _deref(schema, named)
    if isinstance(schema, list):
        return _sample(schema[min(k, len(schema) - 1)], k, named)
    kind = _kind(schema)
    if kind == "record":
        return {f["name"]: _sample(f["type"], k, named) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][min(k, len(schema["symbols"]) - 1)]
    if kind == "array":
        return [_sample(schema["items"], k, named)]
    if kind == "map":
        return {"key": _sample(schema["values"], k, named)}
    if kind == "fixed":
        return bytes(schema["size"])
    return _SAMPLES[kind]
