"""Who called what: an `api_audit_log` row per guarded request, written off the request path.

The middleware only appends a tuple to a bounded backlog; a daemon thread drains it in batches
into SQLite (default) or PostgreSQL. While the database is down, a failed batch goes back to the
front of the backlog and is retried every `retry_seconds`, so a restart loses nothing; only when
the backlog fills are rows dropped and counted rather than making requests wait.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.request_logging import AccessEntry, current_request_id, log_access
from serving.security.auth import STATE_AUTH_METHOD, STATE_PRINCIPAL

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
    and wakes no thread, so the request path pays well under a microsecond per row.
    """

    def __init__(
        self,
        url: str,
        *,
        max_pending: int = 20_000,
        batch_size: int = 1_000,
        flush_seconds: float = 0.25,
        retry_seconds: float = 2.0,
    ) -> None:
        self.url = url
        self._pending: deque[AuditRow] = deque()
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._retry_seconds = retry_seconds
        self._engine: Engine | None = None
        self._table_ready = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._failing = False
        self._last_drop_warning = 0.0

    def start(self) -> None:
        """Create the table now (raising if the database is unreachable) and start writing;
        called at application startup so a wrong URL stops the deployment, not the audit."""
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

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending and stop the thread; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        atexit.unregister(self.close)
        self._stop.set()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("audit writer still busy after %.0fs; pending rows may be lost", timeout)
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
                    connect_args={"connect_timeout": 10} if postgres else {},
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
        wait = self._flush_seconds
        while not self._stop.wait(wait):
            wait = self._flush_seconds if self._drain(final=False) else self._retry_seconds
        self._drain(final=True)

    def _drain(self, final: bool) -> bool:
        """Write the backlog in batches; False when the database refused one, which then
        waits at the front of the backlog for the next try (on the final drain it is lost)."""
        pending = self._pending
        while pending:
            batch = [pending.popleft() for _ in range(min(len(pending), self._batch_size))]
            if self._write(batch):
                continue
            if final:
                self.failed += len(batch) + len(pending)
                log.error("audit: %d rows not written at shutdown", len(batch) + len(pending))
                pending.clear()
            else:
                pending.extendleft(reversed(batch))
            return False
        return True

    def _write(self, batch: Sequence[AuditRow]) -> bool:
        rows = [row._asdict() for row in batch]
        for row in rows:
            row["ts"] = datetime.fromtimestamp(row.pop("started"), UTC)
        try:
            self._ensure_table()
            with self._engine_for_url().begin() as conn:
                conn.execute(audit_log.insert(), rows)
        except Exception:
            if not self._failing:
                log.warning(
                    "audit: cannot write to the audit log; keeping rows and retrying every %.0fs",
                    self._retry_seconds,
                    exc_info=True,
                )
            self._failing = True
            return False
        if self._failing:
            log.warning("audit: writing again, %d rows waiting", len(self._pending))
            self._failing = False
        self.written += len(rows)
        return True


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets auditors read while the API writes; NORMAL sync is safe with WAL."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_SECRET_PARAMS = re.compile(rb"(^|&)(access_token|token)=[^&]*")


def _query(raw: bytes) -> str:
    """The query string with WebSocket tokens redacted, so logs never hold credentials."""
    if b"token" in raw:
        raw = _SECRET_PARAMS.sub(rb"\1\2=REDACTED", raw)
    return raw.decode("latin-1")


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
                _query(scope.get("query_string", b"")),
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
            await send(message)

        await self.app(scope, receive_after_startup, send_after_close)


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
