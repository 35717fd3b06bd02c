"""Audit rows the database cannot take now (spill) or ever (quarantine), kept on local disk.

Both are JSON-lines files, created 0600 (a row names callers and their queries), in the API's
state folder (`TRAFFIC_API_AUDIT_SPILL_DIR`):

- `spill-<time>-<pid>-<n>.jsonl`: rows written at shutdown or while the database was down with
  a full backlog (written under a temporary name, fsynced, then renamed: a file is complete).
  The writer replays them into the database at its next start (or as soon as the database
  answers again) and deletes each file once every row in it is stored or quarantined.
  Several API workers may share the folder: a worker claims a file with an exclusive `flock`,
  so no file is replayed twice. A worker killed between the database's commit and the delete
  replays that file again at its next start: rows may then be stored twice, never lost.
- `quarantine.jsonl`: rows the database refused even one by one, each with the reason
  (`{"reason": ..., "row": {...}}`). A file, not a table: the refusal may come from the very
  database, or content, a table would need. Rows are sanitized, so this should stay empty; an
  operator reads it, fixes the cause and may insert the rows by hand.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from traffic_core.durable import fsync_path

log = logging.getLogger(__name__)

QUARANTINE_FILE = "quarantine.jsonl"
SPILL_GLOB = "spill-*.jsonl"
_counter = itertools.count()

Row = dict[str, Any]


def _dumps(row: Row) -> str:
    """ASCII JSON (any text survives), the timestamp as ISO 8601."""
    return json.dumps({**row, "ts": row["ts"].isoformat()}, ensure_ascii=True)


def _loads(line: str) -> Row:
    row = json.loads(line)
    row["ts"] = datetime.fromisoformat(row["ts"])
    return row


def _write_lines(path: Path, lines: list[str], flags: int) -> None:
    fd = os.open(path, flags | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        out.write("".join(line + "\n" for line in lines))
        out.flush()
        os.fsync(out.fileno())


class SpillDir:
    """The folder of spill files and the quarantine file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.unreadable = 0

    def _ready(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def spill(self, rows: list[Row]) -> Path:
        """Write `rows` to a new spill file (durable when this returns)."""
        self._ready()
        name = f"spill-{time.time_ns()}-{os.getpid()}-{next(_counter)}.jsonl"
        path = self.path / name
        partial = self.path / f".{name}.partial"  # not a spill file until complete
        _write_lines(partial, [_dumps(row) for row in rows], os.O_CREAT | os.O_EXCL)
        partial.rename(path)
        fsync_path(self.path)
        return path

    def quarantine(self, row: Row, reason: str) -> None:
        """Append `row` and why the database refused it to the quarantine file."""
        self._quarantine({"reason": reason, "row": json.loads(_dumps(row))})

    def _quarantine(self, entry: dict[str, Any]) -> None:
        self._ready()
        line = json.dumps(entry, ensure_ascii=True)
        _write_lines(self.path / QUARANTINE_FILE, [line], os.O_CREAT | os.O_APPEND)

    def quarantined(self) -> list[dict[str, Any]]:
        path = self.path / QUARANTINE_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text("ascii").splitlines()]

    def files(self) -> list[Path]:
        return sorted(self.path.glob(SPILL_GLOB)) if self.path.is_dir() else []

    def replay(self, store: Callable[[list[Row]], list[Row]]) -> tuple[int, bool]:
        """Hand each spill file's rows to `store`, which returns those it could not write yet
        (the database went away). A file is deleted once handed over, after what is left of it
        went to a new spill file; then the replay stops. Unreadable lines are quarantined.
        Returns the rows handed over and stored, and whether every file was done."""
        stored = 0
        for path in self.files():
            handle = _claim(path)
            if handle is None:
                continue  # another worker is replaying it, or already did
            with handle:
                rows = self._rows(handle.read())
                rest = store(rows)
                stored += len(rows) - len(rest)
                if rest:
                    self.spill(rest)
                path.unlink()
                fsync_path(self.path)
            if rest:
                return stored, False
        return stored, True

    def _rows(self, text: str) -> list[Row]:
        rows = []
        for line in filter(str.strip, text.splitlines()):
            try:
                rows.append(_loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                self.unreadable += 1
                log.error("audit: unreadable spill line quarantined: %s", exc)
                self._quarantine({"reason": f"unreadable spill line: {exc}", "line": line})
        return rows


def _claim(path: Path) -> Any:
    """The open, exclusively locked file, or None when another process holds it or the name
    no longer points at what was opened (replayed and deleted meanwhile)."""
    try:
        handle = open(path, encoding="ascii", errors="replace")  # noqa: SIM115 - returned
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
            raise FileNotFoundError(path)
    except OSError:
        handle.close()
        return None
    return handle
