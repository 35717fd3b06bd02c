"""Structured JSON logs where every record carries the request id (X-Request-ID).

Records are formatted and written by a background thread: a slow or blocked stderr (a full
container log pipe) must not stall the event loop that serves requests. Access lines, one per
request, skip `logging`'s record machinery on the request path altogether (`log_access`): the
event loop queues a tuple and the writer thread makes the record, which took a sixth of the
worker's CPU at 1,000 requests/s.
"""

from __future__ import annotations

import atexit
import copy
import logging
import random
import re
import sys
import threading
import time
from collections import deque
from typing import NamedTuple, TextIO

from asgi_correlation_id import correlation_id

from traffic_core.json_logs import json_line_formatter
from traffic_core.redaction import redact_server_loggers

REQUEST_ID_HEADER = "X-Request-ID"
ACCESS_LOG = logging.getLogger("serving.access")
"""One line per request: method, path, status, duration_ms, subject, client, request_id."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_handler: _DeferredHandler | None = None


def current_request_id() -> str | None:
    return correlation_id.get()


def new_request_id() -> str:
    """32 hex digits like uuid4().hex, without a getrandom syscall per request (request ids
    need to be unique, not unguessable)."""
    return f"{random.getrandbits(128):032x}"


def valid_request_id(value: str) -> bool:
    """Accept callers' ids (UUIDs, trace ids, nginx ids) but nothing that could forge log
    lines or bloat them; others are replaced by a fresh id."""
    return _REQUEST_ID.fullmatch(value) is not None


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request) to every record passing the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = correlation_id.get()
        return True


class AccessEntry(NamedTuple):
    """One request, as the access log reports it."""

    method: str
    path: str
    status: int
    duration_ms: float
    subject: str | None
    client: str | None


def log_access(entry: AccessEntry) -> None:
    """Write `entry` as an INFO line of the `serving.access` logger, carrying the request id.

    With the JSON handler installed the request path only queues the entry; otherwise (logging
    configured by someone else, e.g. a test's capture) it goes through `ACCESS_LOG.info`.
    """
    if not ACCESS_LOG.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is not None and not ACCESS_LOG.handlers and ACCESS_LOG.propagate:
        handler.defer_access(entry, correlation_id.get(), time.time())
        return
    ACCESS_LOG.info("%s %s %d", entry.method, entry.path, entry.status, extra=entry._asdict())


def _access_record(entry: AccessEntry, request_id: str | None, created: float) -> logging.LogRecord:
    """The record `ACCESS_LOG.info` would have made at `created`, built on the writer thread."""
    message = f"{entry.method} {entry.path} {entry.status}"
    record = ACCESS_LOG.makeRecord(
        ACCESS_LOG.name, logging.INFO, __file__, 0, message, (), None, extra=entry._asdict()
    )
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.request_id = request_id
    return record


class _DeferredHandler(logging.Handler):
    """Buffers records; a daemon thread hands them to `target` every `interval` seconds (at
    once for ERROR and above). Logging on the event loop then neither waits on the stream nor
    wakes a thread per record; a full buffer drops records and counts them."""

    def __init__(
        self, target: logging.Handler, interval: float = 0.1, capacity: int = 100_000
    ) -> None:
        super().__init__()
        self.target = target
        self.dropped = 0
        self._records: deque[logging.LogRecord | tuple] = deque()
        self._capacity = capacity
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = False
        self._drain_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if len(self._records) >= self._capacity:
            self.dropped += 1
            return
        self._records.append(_prepared(record))
        if record.levelno >= logging.ERROR:
            self._wake.set()

    def defer_access(self, entry: AccessEntry, request_id: str | None, created: float) -> None:
        """Queue an access line; the record is made on the writer thread."""
        if len(self._records) >= self._capacity:
            self.dropped += 1
            return
        self._records.append((entry, request_id, created))

    def flush(self) -> None:
        with self._drain_lock:
            records = self._records
            if getattr(getattr(self.target, "stream", None), "closed", False):
                records.clear()  # e.g. a test's captured stderr, closed before the exit flush
                return
            try:
                while records:
                    record = records.popleft()
                    if isinstance(record, tuple):
                        record = _access_record(*record)
                    self.target.handle(record)
                self.target.flush()
            except ValueError:  # the stream was closed under us (a test's captured stderr)
                records.clear()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(5.0)
        self.flush()
        super().close()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()


def _prepared(record: logging.LogRecord) -> logging.LogRecord:
    """A copy with the message rendered and the traceback as text, safe to format later
    in another thread (extra fields such as request_id are kept for the JSON formatter)."""
    record = copy.copy(record)
    record.msg = record.message = record.getMessage()
    record.args = None
    if record.exc_info:
        record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    return record


def json_formatter() -> logging.Formatter:
    """Level, logger, message, timestamp and extras, with credentials redacted; formatted on
    the writer thread, so redaction costs the request path nothing."""
    return json_line_formatter()


def configure_logging(level: int | str = "INFO", stream: TextIO | None = None) -> None:
    """Route all logging (uvicorn's too) to JSON lines on stream (stderr by default).

    Replaces the root handlers, like logging.basicConfig(force=True); uvicorn's own access log is
    silenced because the API's access lines (logger `serving.access`) replace it. Lines are
    redacted: WebSocket handshake lines keep their path but not `?access_token=`.
    """
    global _handler
    shutdown_logging()
    output = logging.StreamHandler(stream or sys.stderr)
    output.setFormatter(json_formatter())
    _handler = _DeferredHandler(output)
    _handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(_handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    redact_server_loggers()  # their handshake lines also reach handlers other than ours
    atexit.unregister(shutdown_logging)
    atexit.register(shutdown_logging)


def flush_logs() -> None:
    """Write out what the JSON handler holds now. At the end of a graceful shutdown: uvicorn
    then re-raises SIGTERM to exit with it, so the exit-time flush never runs."""
    if _handler is not None:
        _handler.flush()


def shutdown_logging() -> None:
    """Write out buffered records and detach the JSON handler (at exit, or between tests)."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.close()
        _handler = None
