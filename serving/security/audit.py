"""Who called what: an `api_audit_log` row per guarded request, written off the request path.

The middleware only appends a tuple to a bounded backlog; a daemon thread drains it in batches
into SQLite (default) or PostgreSQL. No request can stop the trail:

- values are sanitized first (`audit_sanitize`: control characters and invalid UTF-8 spelled
  out, lengths bounded) and secret query parameters redacted (`traffic_core.redaction`, as
  in every log line);
- a batch the database refuses for its content is written row by row, and each row it still
  refuses goes to the quarantine file with the database's reason (`audit_spill`);
- while the database is unreachable the rows stay in the backlog and are retried every
  `retry_seconds`; once half the backlog is used they move to a spill file;
- at shutdown the backlog is written until `drain_seconds` pass, the rest is spilled, and spill
  files are replayed at the next start.

Rows are dropped (and counted) only when the backlog is full before the writer thread could
spill it, or when there is no spill folder, so requests never wait for the audit.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    make_url,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.request_logging import AccessEntry, current_request_id, flush_logs, log_access
from serving.security.audit_sanitize import TEXT_LIMIT, sanitize
from serving.security.audit_spill import SpillDir
from serving.security.auth import STATE_AUTH_METHOD, STATE_PRINCIPAL
from traffic_core.redaction import redact_query

log = logging.getLogger(__name__)

metadata = MetaData()
audit_log = Table(
    "api_audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("request_id", String(128)),
    Column("subject", String(256), index=True),
    Column("roles", String(256)),
    Column("auth_method", String(16)),
    Column("method", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("query", Text),
    Column("status", Integer, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("client", String(64)),
)


class AuditRow(NamedTuple):
    """Built on the request path, so a plain tuple; the writer thread makes the datetime."""

    started: float
    request_id: str | None
    subject: str | None
    roles: str | None
    auth_method: str | None
    method: str
    path: str
    query: str
    status: int
    duration_ms: float
    client: str | None


class AuditWriter:
    """Batches rows into the database from a daemon thread.

    Rows wait in a deque that the thread polls every `flush_seconds`: appending needs no lock
    and wakes no thread, so the request path pays well under a microsecond per row. Values are
    sanitized (`audit_sanitize`) before they are stored. With a `spill_dir`, rows that cannot
    wait in memory (database down with a full backlog, or shutdown) go to spill files that are
    replayed later, and rows the database refuses go to the quarantine file (`audit_spill`).

    Counters: `written` rows are in the database (`replayed` of them came from spill files),
    `quarantined` were refused, `spilled` went to disk, `dropped` were lost because the backlog
    was full and `failed` because nothing could take them at shutdown.
    """

    def __init__(
        self,
        url: str,
        *,
        spill_dir: Path | None = None,
        max_pending: int = 20_000,
        batch_size: int = 1_000,
        flush_seconds: float = 0.25,
        retry_seconds: float = 2.0,
        drain_seconds: float = 10.0,
    ) -> None:
        self.url = url
        self.spill = SpillDir(spill_dir) if spill_dir is not None else None
        self._pending: deque[AuditRow] = deque()
        self._max_pending = max_pending
        self._spill_at = max(max_pending // 2, 1)
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._retry_seconds = retry_seconds
        self._drain_seconds = drain_seconds
        self._engine: Engine | None = None
        self._table_ready = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._abandoned = False
        self._deadline: float | None = None
        self._in_flight: list[AuditRow] = []
        self._replay_due = self.spill is not None
        self.written = 0
        self.replayed = 0
        self.quarantined = 0
        self.spilled = 0
        self.dropped = 0
        self.failed = 0
        self._failing = False
        self._last_drop_warning = 0.0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        """Create the table now (raising if the database is unreachable) and start writing;
        called at application startup so a wrong URL stops the deployment, not the audit.
        Spill files left by an earlier run are replayed first thing by the writer thread."""
        self._ensure_table()
        self._launch()

    def submit(self, row: AuditRow) -> None:
        """Never blocks: when the backlog is full (or the writer closed) the row is dropped,
        counted in `dropped`, and a warning is logged at most every 10 s."""
        if self._thread is None and not self._closed:
            self._launch()
        if not self._closed and len(self._pending) < self._max_pending:
            self._pending.append(row)
            return
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_warning > 10.0:
            self._last_drop_warning = now
            log.warning("audit backlog full or writer closed: %d rows dropped", self.dropped)

    def close(self, timeout: float | None = None) -> None:
        """Write what is pending within `timeout` (default `drain_seconds`), spill the rest,
        and stop the thread; safe to call twice. Should the thread still be stuck in the
        database after the deadline, its rows are spilled from here: rows in flight may then
        be stored twice, but none is lost."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        atexit.unregister(self.close)
        timeout = self._drain_seconds if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        if thread is not None:
            thread.join(timeout + 5.0)  # the thread spills after the deadline; give it time
            if thread.is_alive():
                with self._lock:
                    self._abandoned = True
                    rows = [*self._in_flight, *self._pending]
                    self._pending.clear()
                log.error("audit writer still busy after %.0fs; spilling its rows", timeout)
                self._spill_or_lose(rows)
        elif self._pending:
            self._spill_or_lose(self._take(len(self._pending)))
        if self._engine is not None:
            self._engine.dispose()

    def _launch(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="api-audit", daemon=True)
            self._thread.start()
        atexit.register(self.close)

    def _engine_for_url(self) -> Engine:
        if self._engine is None:
            url = make_url(self.url)
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_wal)
            else:
                # pre-ping replaces the connection a database restart killed; the connect
                # timeout keeps an unreachable host from stalling the writer.
                postgres = url.get_backend_name() == "postgresql"
                engine = create_engine(
                    url,
                    pool_size=1,
                    max_overflow=0,
                    pool_pre_ping=True,
                    connect_args=_POSTGRES_TIMEOUTS if postgres else {},
                )
            self._engine = engine
        return self._engine

    def _ensure_table(self) -> None:
        if self._table_ready:
            return
        engine = self._engine_for_url()
        try:
            metadata.create_all(engine, tables=[audit_log])
        except Exception:
            # Several API workers starting together race to create it; one winner is enough.
            if not inspect(engine).has_table(audit_log.name):
                raise
        self._table_ready = True

    def _run(self) -> None:
        next_try = 0.0  # first thing: replay what an earlier run spilled
        while True:
            try:
                if time.monotonic() >= next_try:
                    written = self._drain() and self._replay()
                    next_try = 0.0 if written else time.monotonic() + self._retry_seconds
                if next_try and self.spill is not None and len(self._pending) >= self._spill_at:
                    self._spill_or_keep()
            except Exception:  # a bug here must not end the audit trail: log, try again later
                log.exception("audit: writer error; retrying")
                with self._lock:  # rows of the batch may be stored twice then, none lost
                    self._pending.extendleft(reversed(self._in_flight))
                    self._in_flight = []
                next_try = time.monotonic() + self._retry_seconds
            if self._stop.wait(self._flush_seconds):
                break
        self._final_drain()

    def _take(self, count: int) -> list[AuditRow]:
        pending = self._pending
        return [pending.popleft() for _ in range(min(len(pending), count))]

    def _drain(self, deadline: float | None = None) -> bool:
        """Write the backlog in batches; False when the database is unreachable: the rows
        not written then wait at the front of the backlog for the next try."""
        while self._pending and (deadline is None or time.monotonic() < deadline):
            batch = self._in_flight = self._take(self._batch_size)
            rest = self._store([_prepare(row) for row in batch])
            with self._lock:
                self._in_flight = []
                if rest and not self._abandoned:
                    self._pending.extendleft(reversed(batch[len(batch) - len(rest) :]))
            if rest:
                return False
        return True

    def _replay(self) -> bool:
        """Spill files, once after start and again whenever a backlog was spilled."""
        if not self._replay_due or self.spill is None:
            return True
        unreadable = self.spill.unreadable
        try:
            stored, done = self.spill.replay(self._store)
        except Exception:
            log.exception("audit: cannot replay the spill files in %s", self.spill.path)
            self._replay_due = False  # they stay for the next start; live rows keep flowing
            return True
        finally:
            self.quarantined += self.spill.unreadable - unreadable
        self.replayed += stored
        self._replay_due = not done
        return done

    def _final_drain(self) -> None:
        if self._pending:
            log.info("audit: writing %d waiting rows before stopping", len(self._pending))
        self._drain(self._deadline or time.monotonic() + self._drain_seconds)
        with self._lock:
            if self._abandoned:
                return
            rows = self._take(len(self._pending))
        self._spill_or_lose(rows)

    def _spill_or_keep(self) -> None:
        """Database down, backlog half full: move it to disk so requests keep being audited."""
        rows = self._take(len(self._pending))
        try:
            self._spill_rows(rows)
        except OSError:
            log.exception("audit: cannot spill the backlog; keeping it in memory")
            self._pending.extendleft(reversed(rows))
        else:
            self._replay_due = True

    def _spill_or_lose(self, rows: list[AuditRow]) -> None:
        if not rows:
            return
        try:
            if self.spill is None:
                raise OSError("no spill folder configured")
            self._spill_rows(rows)
        except OSError:
            self.failed += len(rows)
            log.exception("audit: %d rows not written at shutdown", len(rows))

    def _spill_rows(self, rows: list[AuditRow]) -> None:
        assert self.spill is not None
        path = self.spill.spill([_prepare(row) for row in rows])
        self.spilled += len(rows)
        log.warning(
            "audit: %d rows spilled to %s, replayed once the database answers (or at the next "
            "start)",
            len(rows),
            path,
        )

    def _store(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert `rows`; when the database refuses the batch (not a lost connection), row by
        row, quarantining each one it refuses. Returns the rows left for a later try: [] unless
        the database is unreachable."""
        error = self._insert(rows)
        if error is None:
            return []
        if _unreachable(error):
            self._note_failing(error)
            return rows
        for index, row in enumerate(rows):
            error = self._insert([row])
            if error is not None and _unreachable(error):
                self._note_failing(error)
                return rows[index:]
            if error is not None:
                self._quarantine(row, error)
        return []

    def _insert(self, rows: list[dict[str, Any]]) -> BaseException | None:
        try:
            self._ensure_table()
            with self._engine_for_url().begin() as conn:
                conn.execute(audit_log.insert(), rows)
        except Exception as exc:
            return exc
        if self._failing:
            log.warning("audit: writing again, %d rows waiting", len(self._pending))
            self._failing = False
        self.written += len(rows)
        return None

    def _note_failing(self, error: BaseException) -> None:
        self._table_ready = False  # dropped or not yet there: created again on the next try
        if not self._failing:
            log.warning(
                "audit: cannot reach the audit log; keeping rows and retrying every %.0fs",
                self._retry_seconds,
                exc_info=error,
            )
        self._failing = True

    def _quarantine(self, row: dict[str, Any], error: BaseException) -> None:
        reason = _reason(error)
        self.quarantined += 1
        try:
            if self.spill is None:
                raise OSError("no spill folder configured")
            self.spill.quarantine(row, reason)
        except OSError:
            log.exception("audit: row refused (%s) and not quarantined: %r", reason, row)
        else:
            log.error("audit: row refused (%s), quarantined in %s", reason, self.spill.path)


_POSTGRES_TIMEOUTS = {
    "connect_timeout": 10,
    "tcp_user_timeout": 10_000,  # ms; with the keepalives, a vanished server frees the writer
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""libpq settings that keep an unreachable database from holding the writer thread forever
(it would then neither write nor spill)."""

_DATABASE_SQLSTATES = ("08", "42", "53", "57", "58")
"""Connection exception, a missing table or permission, insufficient resources (disk full),
operator intervention, system error: the database's state, not the row's content."""


def _unreachable(error: BaseException) -> bool:
    """The database cannot take rows now (retry later), as opposed to refusing this row's
    content (a data or integrity error: quarantine)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, DBAPIError):
        return False  # the driver refused the values themselves
    sqlstate = getattr(error.orig, "pgcode", None) or getattr(error.orig, "sqlstate", None)
    if sqlstate is None:
        return isinstance(error, OperationalError | InterfaceError)
    return str(sqlstate).startswith(_DATABASE_SQLSTATES)


def _reason(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    sqlstate = getattr(original, "pgcode", None)
    message = str(original).strip().splitlines()[0] if str(original).strip() else ""
    prefix = f"{type(original).__name__}" + (f" [{sqlstate}]" if sqlstate else "")
    return f"{prefix}: {message}"[:1000]


_LIMITS = {
    column.name: getattr(column.type, "length", None) or TEXT_LIMIT
    for column in audit_log.columns
    if isinstance(column.type, String)
}


def _prepare(row: AuditRow) -> dict[str, Any]:
    """The row as the table takes it: text sanitized to its column, the time a datetime."""
    values = row._asdict()
    started = values.pop("started")
    try:
        values["ts"] = datetime.fromtimestamp(started, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        values["ts"] = datetime.now(UTC)  # a clock gone wrong must not cost the row
    for name, limit in _LIMITS.items():
        value = values[name]
        values[name] = sanitize(
            value if value is None or isinstance(value, str) else str(value), limit
        )
    return values


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets auditors read while the API writes; NORMAL sync is safe with WAL."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class AuditMiddleware:
    """Pure ASGI: times every request, writes a JSON access-log line, and queues an audit row
    when the request reached a guarded endpoint (the `require` dependency marked its state).

    It also starts the writer at lifespan startup and closes it at shutdown.
    """

    def __init__(self, app: ASGIApp, writer: AuditWriter | None = None) -> None:
        self.app = app
        self.writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        started = time.time()
        t0 = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            mtype = message["type"]
            if mtype == "http.response.start" or mtype == "websocket.http.response.start":
                status = message["status"]
            elif mtype == "websocket.accept":
                status = 101
            elif mtype == "websocket.close" and not status:
                status = 403  # closed during the handshake: the server answers 403
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self._record(scope, state, status or 500, started, time.perf_counter() - t0)

    def _record(
        self, scope: Scope, state: dict[str, Any], status: int, started: float, elapsed: float
    ) -> None:
        principal = state.get(STATE_PRINCIPAL)
        subject = principal.subject if principal is not None else None
        method = scope.get("method", "WS")
        path = scope["path"]
        duration_ms = round(elapsed * 1000, 3)
        request_id = current_request_id()
        client = scope.get("client")
        host = client[0] if client else None
        log_access(AccessEntry(method, path, status, duration_ms, subject, host))
        if self.writer is None or STATE_PRINCIPAL not in state:
            return
        self.writer.submit(
            AuditRow(
                started,
                request_id,
                subject,
                ",".join(sorted(principal.roles)) if principal is not None else None,
                principal.via if principal is not None else state.get(STATE_AUTH_METHOD),
                method,
                path,
                redact_query(scope.get("query_string", b"").decode("utf-8", "surrogateescape")),
                status,
                duration_ms,
                host,
            )
        )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = self.writer
        if writer is None:
            await self.app(scope, receive, send)
            return
        startup = await receive()
        try:
            await asyncio.to_thread(writer.start)
        except Exception as exc:
            # Like Starlette's router: report the failure to the server, then raise.
            message = f"audit log at {_safe_url(writer.url)} is unusable: {exc}"
            await send({"type": "lifespan.startup.failed", "message": message})
            raise RuntimeError(message) from exc
        replayed = False

        async def receive_after_startup() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return startup
            return await receive()

        async def send_after_close(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown."):
                await asyncio.to_thread(writer.close)
                flush_logs()  # what the close said (rows spilled, lost) must reach the log
            await send(message)

        await self.app(scope, receive_after_startup, send_after_close)


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
