"""Subjects, versions, ids and compatibility levels of the schema registry, kept in one JSON file.

Ids are global and never reused: registering a schema already known under any subject returns
its id, as Confluent's registry does. Every change is written to a new file, fsynced and renamed
over the old one before it is acknowledged, so a crash never loses an id a client was given.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import SchemaParseException

from traffic_core.durable import replace_durably
from traffic_core.events.schema import check_compatibility


class Compatibility(StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"


DEFAULT_COMPATIBILITY = Compatibility.BACKWARD


class InvalidSchema(ValueError):
    """Not an Avro schema (Confluent error 42201)."""


class IncompatibleSchema(ValueError):
    """Breaks the subject's compatibility level (HTTP 409)."""


class NotFound(LookupError):
    """Unknown subject (40401), version (40402) or schema (40403)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Version:
    subject: str
    version: int
    schema_id: int
    schema: str


def normalized(schema: str) -> str:
    """The schema's JSON with sorted keys and no spaces: one text per distinct schema.

    Parsing canonical form is not used as identity because it drops defaults and aliases,
    which change how data resolves.
    """
    try:
        parsed = json.loads(schema)
        parse_schema(parsed)
    except (ValueError, TypeError, LookupError, RecursionError, SchemaParseException) as exc:
        raise InvalidSchema(f"invalid Avro schema: {exc}") from exc
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"))


def compatibility_problems(level: Compatibility, new: str, previous: list[str]) -> list[str]:
    """Why `new` may not follow `previous` (oldest first) under `level`; empty if it may."""
    if level is Compatibility.NONE or not previous:
        return []
    against = previous if level.endswith("TRANSITIVE") else previous[-1:]
    reader = json.loads(new)
    problems: list[str] = []
    for old in map(json.loads, against):
        if not (_is_record(old) and _is_record(reader)):
            problems += [] if old == reader else ["only record schemas may change"]
            continue
        try:
            if level.startswith(("BACKWARD", "FULL")):
                problems += check_compatibility(old, reader)  # new readers read old data
            if level.startswith(("FORWARD", "FULL")):
                problems += check_compatibility(reader, old)  # old readers read new data
        except Exception as exc:  # a schema fastavro parses but no data could be written with
            problems.append(f"cannot resolve one schema with the other: {exc!r}")
    return problems


def _is_record(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "record"


@dataclass
class SchemaStore:
    path: Path
    _schemas: dict[int, str] = field(default_factory=dict)
    _subjects: dict[str, list[int]] = field(default_factory=dict)
    _config: dict[str, Compatibility] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)  # requests run in threads

    @classmethod
    def open(cls, path: Path) -> SchemaStore:
        store = cls(path)
        if path.exists():
            state = json.loads(path.read_text())
            store._schemas = {int(k): v for k, v in state["schemas"].items()}
            store._subjects = state["subjects"]
            store._config = {k: Compatibility(v) for k, v in state["config"].items()}
        return store

    def _save(self) -> None:
        state: dict[str, Any] = {
            "schemas": self._schemas,
            "subjects": self._subjects,
            "config": self._config,
        }
        partial = self.path.with_name(self.path.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(state, indent=1))
        replace_durably(partial, self.path)

    def register(self, subject: str, schema: str) -> int:
        """The id of `schema` under `subject`, adding it as the next version if it is new."""
        text = normalized(schema)
        with self._lock:
            found = self._find(subject, text)
            if found is not None:
                return found.schema_id
            history = [self._schemas[i] for i in self._subjects.get(subject, [])]
            problems = compatibility_problems(self.compatibility(subject), text, history)
            if problems:
                level = self.compatibility(subject)
                raise IncompatibleSchema(f"{level} compatibility of {subject}: {problems}")
            schema_id = next((i for i, s in self._schemas.items() if s == text), None)
            if schema_id is None:
                schema_id = max(self._schemas, default=0) + 1
                self._schemas[schema_id] = text
            self._subjects.setdefault(subject, []).append(schema_id)
            self._save()
            return schema_id

    def _find(self, subject: str, text: str) -> Version | None:
        for number, schema_id in enumerate(self._subjects.get(subject, []), start=1):
            if self._schemas[schema_id] == text:
                return Version(subject, number, schema_id, text)
        return None

    def lookup(self, subject: str, schema: str) -> Version:
        with self._lock:
            self.versions(subject)  # 40401 for an unknown subject
            found = self._find(subject, normalized(schema))
            if found is None:
                raise NotFound(40403, f"schema not found under {subject}")
            return found

    def schema(self, schema_id: int) -> str:
        with self._lock:
            if schema_id not in self._schemas:
                raise NotFound(40403, f"schema {schema_id} not found")
            return self._schemas[schema_id]

    def subjects_of(self, schema_id: int) -> list[Version]:
        with self._lock:
            text = self.schema(schema_id)
            return [
                Version(subject, number, schema_id, text)
                for subject, ids in sorted(self._subjects.items())
                for number, i in enumerate(ids, start=1)
                if i == schema_id
            ]

    def subjects(self) -> list[str]:
        with self._lock:
            return sorted(self._subjects)

    def versions(self, subject: str) -> list[int]:
        with self._lock:
            if subject not in self._subjects:
                raise NotFound(40401, f"subject {subject} not found")
            return list(range(1, len(self._subjects[subject]) + 1))

    def version(self, subject: str, version: str | int) -> Version:
        with self._lock:
            numbers = self.versions(subject)
            number = numbers[-1] if version in ("latest", -1) else int(version)
            if number not in numbers:
                raise NotFound(40402, f"version {version} of {subject} not found")
            schema_id = self._subjects[subject][number - 1]
            return Version(subject, number, schema_id, self._schemas[schema_id])

    def compatibility(self, subject: str | None = None) -> Compatibility:
        with self._lock:
            if subject is not None and subject in self._config:
                return self._config[subject]
            return self._config.get("", DEFAULT_COMPATIBILITY)

    def set_compatibility(self, subject: str | None, level: Compatibility) -> None:
        with self._lock:
            self._config[subject or ""] = level
            self._save()

    def is_compatible(self, subject: str, schema: str, version: str | int) -> bool:
        with self._lock:
            text = normalized(schema)
            level = self.compatibility(subject)
            if level.endswith("TRANSITIVE"):
                history = [self._schemas[i] for i in self._subjects.get(subject, [])]
            else:
                history = [self.version(subject, version).schema]
            return not compatibility_problems(level, text, history)
