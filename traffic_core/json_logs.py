"""JSON log lines shared by the command-line processes (producer, ingestion workers) and the
API, so their records can be searched by the same fields (level, logger, timestamp, extras).
Every line is redacted (`traffic_core.redaction`): no credential is ever written."""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter, orjson_default

from traffic_core.redaction import redact


def _encodable(value: Any) -> Any:
    """The library's fallback, minus its failure on a weak proxy whose object is gone (the
    `websocket` extra of a WebSocket server's records, formatted after the socket closed)."""
    try:
        return orjson_default(value)
    except ReferenceError:
        return "<gone>"


class RedactingJsonFormatter(OrjsonFormatter):
    """The whole line is redacted, so extras (a request path) and tracebacks are covered too."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def json_line_formatter(*fields: str) -> OrjsonFormatter:
    """One JSON object per record: level, logger, the given record attributes, the message,
    a timestamp and every `extra` passed to the log call."""
    return RedactingJsonFormatter(
        "".join(f"{{{name}}}" for name in ("levelname", "name", *fields, "message")),
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
        json_default=_encodable,
    )
