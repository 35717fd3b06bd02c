"""Ingest ids: the name every reading of one replay or import carries from the lake to the API,
so an auditor can follow a forecast back to the run that delivered its data."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def new_ingest_id(now: datetime | None = None, prefix: str = "ingest") -> str:
    """`<prefix>-<UTC yyyymmddThhmmss>-<6 hex>`: sorts by start time, unique across runs."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{prefix}-{stamp:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
