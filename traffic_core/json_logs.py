"""JSON log lines shared by the command-line processes (producer, ingestion workers), so
their records can be searched by the same fields (level, logger, timestamp, extras)."""

from __future__ import annotations

from pythonjsonlogger.orjson import OrjsonFormatter


def json_line_formatter(*fields: str) -> OrjsonFormatter:
    """One JSON object per record: level, logger, the given record attributes, the message,
    a timestamp and every `extra` passed to the log call."""
    return OrjsonFormatter(
        "".join(f"{{{name}}}" for name in ("levelname", "name", *fields, "message")),
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )
