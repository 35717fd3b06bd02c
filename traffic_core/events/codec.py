"""Encode/decode event messages: Confluent-framed Avro, plus JSON from API users.

Wire format: magic byte 0, 4-byte big-endian schema id, schemaless Avro body. Decoding resolves
any registered version of the subject to its latest version. fastavro's per-call setup caps
schemaless_writer near 70k records/s, so the latest version of a flat schema (readings, weather)
gets a compiled encoder/decoder; older versions and nested schemas go through fastavro.
Batches of a flat schema can also be encoded column-wise (`encode_columns`), which writes each
distinct value once and assembles the messages with numpy: the producer's fast path.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
from fastavro import schemaless_writer

from traffic_core.events.registry_client import default_registry
from traffic_core.events.schema import READING, Reason, SchemaRegistry, read_record

MAGIC = 0
HEADER = struct.Struct(">BI")

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Bounds as comparisons, not `in range(...)`: that scans linearly for a float such as 3.0.
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_REQUIRED = object()
# Failures a well-typed-but-wrong value raises in the compiled writers.
_WRITE_ERRORS = (TypeError, ValueError, AttributeError, OverflowError, struct.error)

Record = dict[str, Any]
_Writer = Callable[[bytearray, Any], None]
_Reader = Callable[[bytes, int], tuple[Any, int]]


class DecodeError(ValueError):
    """A message that cannot become a record; `reason` is the machine-readable code."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EncodeError(ValueError):
    """A record that does not fit the schema (producer-side bug)."""


class EventCodec:
    """Codec for one subject; writes its latest version, reads every registered version."""

    def __init__(self, subject: str = READING, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or default_registry()
        latest = self.registry.latest(subject)
        self.subject = subject
        self.schema_id = latest.schema_id
        self.schema = latest.schema
        self._header = HEADER.pack(MAGIC, latest.schema_id)
        self._compiled = _compile_record(self.schema)
        self._json_fields = [
            (f["name"], _json_converter(f["type"]), f.get("default", _REQUIRED))
            for f in self.schema["fields"]
        ]
        self._field_names = frozenset(f["name"] for f in self.schema["fields"])

    def encode(self, record: Mapping[str, Any]) -> bytes:
        if self._compiled is None:
            buffer = io.BytesIO(self._header)
            buffer.seek(len(self._header))
            try:
                schemaless_writer(buffer, self.schema, dict(record), strict_allow_default=True)
            except _WRITE_ERRORS as exc:
                raise EncodeError(str(exc)) from exc
            return buffer.getvalue()
        out = bytearray(self._header)
        for name, write, default in self._compiled[0]:
            value = record.get(name, default)
            if value is _REQUIRED:
                raise EncodeError(f"missing field {name!r}")
            try:
                write(out, value)
            except _WRITE_ERRORS as exc:
                raise EncodeError(f"field {name!r}: {exc}") from exc
        return bytes(out)

    def encode_many(self, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        return [self.encode(record) for record in records]

    def encode_columns(self, columns: Mapping[str, Any]) -> list[bytes]:
        """The messages `encode` gives for each row of a batch, built column by column.

        A column is a `Categorical`, `Doubles` (double fields only) or one value for every row;
        omitted fields take their defaults. Each distinct value goes through the same writer as
        in `encode`, so the bytes are identical; numpy only copies them into place.
        """
        if self._compiled is None:
            raise EncodeError(f"{self.subject}: only flat schemas encode column-wise")
        parts = [_Part.constant(self._header)]
        for field, (name, write, default) in zip(
            self.schema["fields"], self._compiled[0], strict=True
        ):
            column = columns.get(name, default)
            if column is _REQUIRED:
                raise EncodeError(f"missing field {name!r}")
            if isinstance(column, Doubles):
                parts.append(_Part.doubles(field["type"], column))
            elif isinstance(column, Categorical):
                labels = [_encode_field(name, write, value) for value in column.labels]
                parts.append(_Part.categorical(labels, np.asarray(column.codes)))
            else:
                parts.append(_Part.constant(_encode_field(name, write, column)))
        return _Part.join(parts)

    def decode(self, value: bytes) -> Record:
        """Decode one Confluent-framed Avro message into the latest version's shape."""
        if len(value) < HEADER.size or value[0] != MAGIC:
            raise DecodeError(Reason.UNDECODABLE, "not a Confluent Avro message")
        schema_id = HEADER.unpack_from(value)[1]
        entry = self.registry.get(schema_id)
        if entry is None or entry.subject != self.subject:
            found = "unregistered" if entry is None else f"registered for {entry.subject}"
            raise DecodeError(Reason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is {found}")
        try:  # untrusted bytes: any failure of either decoder means undecodable
            if schema_id == self.schema_id and self._compiled is not None:
                return self._compiled[1](value)
            buffer = io.BytesIO(value)
            buffer.seek(HEADER.size)
            reader = None if schema_id == self.schema_id else self.schema
            record = read_record(buffer, entry.schema, reader)
            if buffer.tell() != len(value):
                raise ValueError(f"{len(value) - buffer.tell()} trailing bytes")
            return record
        except Exception as exc:
            raise DecodeError(Reason.UNDECODABLE, f"schema id {schema_id}: {exc!r}") from exc

    def decode_json(self, value: bytes | str) -> Record:
        """Decode a JSON object with the same fields; timestamps as ISO-8601 or epoch millis.

        Fields the schema lacks are dropped; `decode_json_checked` names them.
        """
        return self.decode_json_checked(value)[0]

    def decode_json_checked(self, value: bytes | str) -> tuple[Record, list[str]]:
        """`decode_json`, plus the names of the object's fields the schema lacks (sorted)."""
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(Reason.UNDECODABLE, f"invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise DecodeError(Reason.UNDECODABLE, "JSON value is not an object")
        record: Record = {}
        for name, convert, default in self._json_fields:
            if name not in obj:
                if default is _REQUIRED:
                    raise DecodeError(Reason.MISSING_FIELD, f"missing field {name!r}")
                record[name] = list(default) if isinstance(default, list) else default
                continue
            try:
                record[name] = convert(obj[name])
            except _WrongType as exc:
                raise DecodeError(Reason.WRONG_TYPE, f"field {name!r}: {exc}") from None
        return record, sorted(obj.keys() - self._field_names)

    def decode_any(self, value: bytes) -> Record:
        """Dispatch on the first byte: Confluent magic 0 -> Avro, '{' (after spaces) -> JSON."""
        return self.decode_any_checked(value)[0]

    def decode_any_checked(self, value: bytes) -> tuple[Record, list[str]]:
        """`decode_any`, plus the JSON fields the schema lacks (Avro has none by construction)."""
        if value[:1] == b"\x00":
            return self.decode(value), []
        if value.lstrip()[:1] == b"{":
            return self.decode_json_checked(value)
        raise DecodeError(Reason.UNDECODABLE, "neither Confluent Avro nor a JSON object")

    def decode_many(self, values: Iterable[bytes]) -> tuple[list[Record], list[tuple[int, Reason]]]:
        """Decode a batch; bad messages are reported by index instead of raising."""
        records: list[Record] = []
        failures: list[tuple[int, Reason]] = []
        for index, value in enumerate(values):
            try:
                records.append(self.decode_any(value))
            except DecodeError as exc:
                failures.append((index, exc.reason))
        return records, failures


# Compiled Avro for flat records ---------------------------------------------------------------


def _write_long(out: bytearray, n: int) -> None:
    if 0 <= n < 64:  # one byte after zigzag: lengths, counts, small values
        out.append(n << 1)
        return
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise ValueError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    z = b & 0x7F
    shift = 7
    while b & 0x80:
        if shift > 63:  # bound the loop: a run of 0xFF bytes must not build a huge int
            raise ValueError("varint longer than 10 bytes")
        pos += 1
        b = buf[pos]
        z |= (b & 0x7F) << shift
        shift += 7
    if z >> 64:
        raise ValueError("varint does not fit an Avro long")
    return (z >> 1) ^ -(z & 1), pos + 1


def _write_null(out: bytearray, value: None) -> None:
    if value is not None:
        raise TypeError(f"expected None, got {type(value).__name__}")


def _read_null(buf: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _write_boolean(out: bytearray, value: bool) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"expected bool, got {type(value).__name__}")
    out.append(value)


def _read_boolean(buf: bytes, pos: int) -> tuple[bool, int]:
    b = buf[pos]
    if b > 1:
        raise ValueError(f"invalid boolean byte {b}")
    return b == 1, pos + 1


def _write_int(out: bytearray, value: int) -> None:
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"{value!r} does not fit an Avro int")
    _write_long(out, value)


def _write_float(out: bytearray, value: float) -> None:
    out += _FLOAT.pack(value)


def _read_float(buf: bytes, pos: int) -> tuple[float, int]:
    return _FLOAT.unpack_from(buf, pos)[0], pos + 4


def _write_double(out: bytearray, value: float) -> None:
    out += _DOUBLE.pack(value)


def _read_double(buf: bytes, pos: int) -> tuple[float, int]:
    return _DOUBLE.unpack_from(buf, pos)[0], pos + 8


def _write_bytes(out: bytearray, value: bytes) -> None:
    _write_long(out, len(value))
    out += value


def _read_span(buf: bytes, pos: int) -> tuple[int, int]:
    n, pos = _read_long(buf, pos)
    end = pos + n
    if n < 0 or end > len(buf):
        raise ValueError(f"length {n} runs past the message")
    return pos, end


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    start, end = _read_span(buf, pos)
    return bytes(buf[start:end]), end


def _write_string(out: bytearray, value: str) -> None:
    _write_bytes(out, value.encode())


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    start, end = _read_span(buf, pos)
    return str(buf[start:end], "utf-8"), end


# Timestamps are cached both ways because every sensor reports on the same 5-minute tick,
# so a batch holds few distinct values, and datetime arithmetic dominates the per-field cost.
@lru_cache(maxsize=4096)
def _timestamp_varint(value: datetime | int) -> bytes:
    # Naive datetimes raise here on purpose: METR-LA stamps are LA local time, not UTC.
    out = bytearray()
    _write_long(out, value if isinstance(value, int) else (value - _EPOCH) // _MS)
    return bytes(out)


@lru_cache(maxsize=4096)
def _datetime_from_millis(millis: int) -> datetime:
    return _EPOCH + _MS * millis


def _write_timestamp_millis(out: bytearray, value: datetime | int) -> None:
    out += _timestamp_varint(value)


def _read_timestamp_millis(buf: bytes, pos: int) -> tuple[datetime, int]:
    millis, pos = _read_long(buf, pos)
    return _datetime_from_millis(millis), pos


_PRIMITIVES: dict[str, tuple[_Writer, _Reader]] = {
    "null": (_write_null, _read_null),
    "boolean": (_write_boolean, _read_boolean),
    "int": (_write_int, _read_long),
    "long": (_write_long, _read_long),
    "float": (_write_float, _read_float),
    "double": (_write_double, _read_double),
    "bytes": (_write_bytes, _read_bytes),
    "string": (_write_string, _read_string),
}


def _nullable(null_index: int, write: _Writer, read: _Reader) -> tuple[_Writer, _Reader]:
    null_tag, value_tag = 2 * null_index, 2 * (1 - null_index)  # zigzag of branch index

    def write_union(out: bytearray, value: Any) -> None:
        if value is None:
            out.append(null_tag)
        else:
            out.append(value_tag)
            write(out, value)

    def read_union(buf: bytes, pos: int) -> tuple[Any, int]:
        tag = buf[pos]
        if tag == null_tag:
            return None, pos + 1
        if tag == value_tag:
            return read(buf, pos + 1)
        raise ValueError(f"invalid union branch tag {tag}")

    return write_union, read_union


def _compile_type(schema: Any) -> tuple[_Writer, _Reader] | None:
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            return None
        null_index = schema.index("null")
        inner = _compile_type(schema[1 - null_index])
        return None if inner is None else _nullable(null_index, *inner)
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-millis" and schema["type"] == "long":
            return _write_timestamp_millis, _read_timestamp_millis
        if "logicalType" in schema:
            return None
        schema = schema["type"]
    return _PRIMITIVES.get(schema)


_Compiled = tuple[list[tuple[str, _Writer, Any]], Callable[[bytes], Record]]


def _compile_record(schema: dict[str, Any]) -> _Compiled | None:
    """Writers per field and a whole-message decoder, or None if any field is not flat."""
    compiled: list[tuple[dict[str, Any], tuple[_Writer, _Reader]]] = []
    for field in schema["fields"]:
        codec = _compile_type(field["type"])
        if codec is None:
            return None
        compiled.append((field, codec))
    writers = [(f["name"], codec[0], f.get("default", _REQUIRED)) for f, codec in compiled]
    readers = [(f["name"], codec[1]) for f, codec in compiled]

    def decode(value: bytes) -> Record:
        record: Record = {}
        pos = HEADER.size
        for name, read in readers:
            record[name], pos = read(value, pos)
        if pos != len(value):
            raise ValueError(f"{len(value) - pos} trailing bytes")
        return record

    return writers, decode


# Column-wise encoding of flat records --------------------------------------------------------


@dataclass(frozen=True)
class Categorical:
    """A column of few distinct values: row i holds labels[codes[i]]."""

    labels: Sequence[Any]
    codes: np.ndarray


@dataclass(frozen=True)
class Doubles:
    """A double column; rows where `null` is set hold None (a ["null", "double"] field)."""

    values: np.ndarray
    null: np.ndarray


def _encode_field(name: str, write: _Writer, value: Any) -> bytes:
    out = bytearray()
    try:
        write(out, value)
    except _WRITE_ERRORS as exc:
        raise EncodeError(f"field {name!r}: {exc}") from exc
    return bytes(out)


@dataclass(frozen=True)
class _Part:
    """One field's bytes for every row, padded to one width: row i's are the first sizes[i]
    bytes of data[i]. A constant has one row of data and a 0-d size, broadcast to every row."""

    data: np.ndarray
    sizes: np.ndarray

    @classmethod
    def constant(cls, value: bytes) -> _Part:
        return cls(np.frombuffer(value, np.uint8)[None, :], np.array(len(value)))

    @classmethod
    def categorical(cls, labels: list[bytes], codes: np.ndarray) -> _Part:
        lengths = np.array([len(label) for label in labels], np.int64)
        table = np.zeros((len(labels), int(lengths.max(initial=0))), np.uint8)
        for i, label in enumerate(labels):
            table[i, : len(label)] = np.frombuffer(label, np.uint8)
        return cls(table[codes], lengths[codes])

    @classmethod
    def doubles(cls, schema: Any, column: Doubles) -> _Part:
        values = np.ascontiguousarray(column.values, "<f8").view(np.uint8).reshape(-1, 8)
        null = np.asarray(column.null, bool)
        if null.shape != values.shape[:1]:
            raise ValueError(f"{len(values)} doubles but {null.shape} null flags")
        if schema == "double" and not null.any():
            return cls(values, np.full(len(values), 8))
        if not (isinstance(schema, list) and sorted(schema) == ["double", "null"]):
            raise EncodeError(f"cannot write {'nulls' if null.any() else 'doubles'} as {schema}")
        null_tag, value_tag = 2 * schema.index("null"), 2 * schema.index("double")
        tags = np.where(null, null_tag, value_tag).astype(np.uint8)
        return cls(np.column_stack([tags, values]), np.where(null, 1, 9))

    @staticmethod
    def join(parts: list[_Part]) -> list[bytes]:
        """Concatenate the parts row by row: one message per row."""
        rows = {len(p.sizes) for p in parts if p.sizes.ndim}
        if len(rows) > 1:
            raise ValueError(f"columns of different lengths {sorted(rows)}")
        n = rows.pop() if rows else 1
        data = [np.broadcast_to(p.data, (n, p.data.shape[1])) for p in parts]
        keep = [np.arange(p.data.shape[1]) < p.sizes[..., None] for p in parts]
        keep_all = np.concatenate([np.broadcast_to(k, (n, k.shape[-1])) for k in keep], axis=1)
        buffer = np.concatenate(data, axis=1)[keep_all].tobytes()
        ends = np.cumsum(keep_all.sum(axis=1)).tolist()
        return [buffer[start:end] for start, end in zip([0, *ends], ends, strict=False)]


# JSON input -----------------------------------------------------------------------------------


class _WrongType(ValueError):
    pass


def _json_converter(schema: Any) -> Callable[[Any], Any]:
    """Check one JSON value against an Avro type and convert it to the Avro-decoded form."""
    if isinstance(schema, list):
        branches = [_json_converter(b) for b in schema if b != "null"]
        nullable = "null" in schema
        return lambda value: _json_union(value, nullable, branches)
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-millis":
            return _json_timestamp
        kind = schema["type"]
        if kind == "array":
            item = _json_converter(schema["items"])
            return lambda value: [item(v) for v in _expect(value, list, "array")]
        if kind == "enum":
            return lambda value: _json_enum(value, schema["symbols"])
        schema = kind
    return _JSON_PRIMITIVES[schema]


def _json_union(value: Any, nullable: bool, branches: list[Callable[[Any], Any]]) -> Any:
    if value is None:
        if nullable:
            return None
        raise _WrongType("null is not allowed")
    errors = []
    for convert in branches:
        try:
            return convert(value)
        except _WrongType as exc:
            errors.append(str(exc))
    raise _WrongType("; ".join(errors))


def _expect(value: Any, kind: type | tuple[type, ...], label: str) -> Any:
    # bool subclasses int: JSON true must not pass as a number, nor 1 as a boolean.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _WrongType(f"expected {label}, got {type(value).__name__}")
    return value


def _json_int(low: int, high: int, label: str) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if not low <= _expect(value, int, label) <= high:
            raise _WrongType(f"{value} does not fit {label}")
        return value

    return convert


def _json_number(value: Any) -> float:
    return float(_expect(value, (int, float), "number"))


def _json_enum(value: Any, symbols: list[str]) -> str:
    if _expect(value, str, "string") not in symbols:
        raise _WrongType(f"{value!r} is not one of {symbols}")
    return value


def _json_timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise _WrongType(f"invalid ISO-8601 timestamp {value!r}") from exc
        if parsed.tzinfo is None:
            raise _WrongType(f"timestamp {value!r} has no UTC offset")
        try:
            utc = parsed.astimezone(UTC)
        except OverflowError as exc:  # e.g. 0001-01-01T00:00+00:01 is before year 1 in UTC
            raise _WrongType(f"timestamp {value!r} out of range") from exc
        # Same precision as the Avro path: timestamp-millis drops microseconds.
        return utc.replace(microsecond=utc.microsecond // 1000 * 1000)
    millis = _json_int(_LONG_MIN, _LONG_MAX, "epoch millis or ISO-8601 string")(value)
    try:
        return _EPOCH + _MS * millis
    except OverflowError as exc:
        raise _WrongType(f"epoch millis {millis} out of range") from exc


_JSON_PRIMITIVES: dict[str, Callable[[Any], Any]] = {
    "null": lambda value: _expect(value, type(None), "null"),
    "boolean": lambda value: _expect(value, bool, "boolean"),
    "int": _json_int(_INT_MIN, _INT_MAX, "int"),
    "long": _json_int(_LONG_MIN, _LONG_MAX, "long"),
    "float": _json_number,
    "double": _json_number,
    "string": lambda value: _expect(value, str, "string"),
}


@lru_cache(maxsize=1)
def _readings() -> EventCodec:
    """Built on first use, not at import: building asks the registry for its ids."""
    return EventCodec(READING)


def encode_reading(record: Mapping[str, Any]) -> bytes:
    return _readings().encode(record)


def encode_readings(records: Iterable[Mapping[str, Any]]) -> list[bytes]:
    return _readings().encode_many(records)


def decode(value: bytes) -> Record:
    return _readings().decode(value)


def decode_json(value: bytes | str) -> Record:
    return _readings().decode_json(value)


def decode_any(value: bytes) -> Record:
    return _readings().decode_any(value)


def decode_many(values: Iterable[bytes]) -> tuple[list[Record], list[tuple[int, Reason]]]:
    return _readings().decode_many(values)
