"""The audit trail takes hostile input and outages without stopping or losing a row.

Generated text and bytes are sanitized into values PostgreSQL stores unchanged; secret query
parameters are redacted however their names are spelled. Against the real PostgreSQL: NUL,
control characters, raw bytes and 100 kB paths are audited and do not stop the rows after
them; a row the database refuses is quarantined with its reason while its batch is written;
a PostgreSQL outage during a burst spills to disk and replays; a real uvicorn receiving SIGTERM
with a backlog drains it or spills it, and the next start replays it. Every request ends in the
table exactly once or in the quarantine file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_fixtures import free_port
from audit_trail_app import API_KEY, JWT_SECRET, create, settings_env
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, create_engine, make_url, select, text

from infra.stack.postgres import PostgresServer
from infra.stack.process import wait_until
from serving.app import create_app
from serving.prometheus import AuditCollector
from serving.security import SecuritySettings
from serving.security import audit as audit_module
from serving.security.audit import AuditRow, AuditWriter, audit_log
from serving.security.audit_sanitize import TEXT_LIMIT, escape, restore, restore_bytes, sanitize
from serving.security.audit_spill import SpillDir
from traffic_core.redaction import redact_query
from traffic_core.settings import REPO_ROOT

GENERATED = settings(derandomize=True, deadline=None, max_examples=200, database=None)
LIMITS = st.sampled_from([1, 3, 16, 64, 96, 128, 256, TEXT_LIMIT])
CHARS = st.one_of(
    st.characters(),
    st.characters(max_codepoint=0x9F),  # C0 and C1 controls, DEL, backslash, often
    st.characters(categories=["Cs"]),  # lone surrogates: invalid UTF-8 as Python holds it
)
TEXT = st.builds(lambda part, times: part * times, st.text(CHARS, max_size=200), st.integers(1, 50))
UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


# --- sanitizing and redacting, on generated input ---------------------------------------


def _check_sanitized(value: str, stored: str, limit: int) -> None:
    assert len(stored) <= limit
    assert UNSTORABLE.search(stored) is None
    stored.encode("utf-8")  # strict: valid UTF-8
    if len(value) <= limit and len(escape(value)) <= limit:
        assert restore(stored) == value
        return
    marker = "..." if limit < 96 else f"...[truncated {len(value)} chars sha256:"
    body, cut, _tail = stored.rpartition(marker[: min(limit, len(marker))])
    assert cut, f"no truncation marker in {stored!r}"
    assert value.startswith(restore(body))
    if limit >= 96:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        assert stored.endswith(f"{digest}]")


@GENERATED
@given(value=TEXT, limit=LIMITS)
def test_sanitized_text_is_bounded_storable_and_restorable(value: str, limit: int) -> None:
    _check_sanitized(value, sanitize(value, limit) or "", limit)


@GENERATED
@given(raw=st.binary(max_size=600), limit=LIMITS)
def test_sanitized_bytes_give_back_the_original_bytes(raw: bytes, limit: int) -> None:
    value = raw.decode("utf-8", "surrogateescape")  # as a raw path or query reaches the audit
    stored = sanitize(value, limit) or ""
    _check_sanitized(value, stored, limit)
    if len(escape(value)) <= limit:
        assert restore_bytes(stored) == raw
    # any bytes as a query string: redacted, then storable
    query = redact_query(raw.decode("utf-8", "surrogateescape"))
    _check_sanitized(query, sanitize(query, limit) or "", limit)


SECRET_NAMES = ("access_token", "token", "api_key", "apikey", "key", "password", "passwd")
SECRET_NAMES += ("secret", "client_secret", "refresh_token", "x-api-key", "jwt", "auth")
PLAIN_NAMES = ("sensor", "horizon", "monkey", "keyboard", "tokenizer", "passage", "limit")


def _spelled(name: str, upper: list[bool], encoded: list[bool]) -> str:
    """`name` with some letters upper-cased and some percent-encoded, as a client may send."""
    out = []
    for index, char in enumerate(name):
        char = char.upper() if index < len(upper) and upper[index] else char
        out.append(f"%{ord(char):02X}" if index < len(encoded) and encoded[index] else char)
    return "".join(out)


@GENERATED
@given(
    secret=st.sampled_from(SECRET_NAMES),
    plain=st.lists(st.sampled_from(PLAIN_NAMES), max_size=3),
    upper=st.lists(st.booleans(), max_size=20),
    encoded=st.lists(st.booleans(), max_size=20),
    value=st.text("abcXYZ0123456789-_.~%", max_size=30),
    position=st.integers(0, 3),
)
def test_secret_parameters_are_redacted_however_spelled(
    secret: str,
    plain: list[str],
    upper: list[bool],
    encoded: list[bool],
    value: str,
    position: int,
) -> None:
    params = [f"{name}=v{index}" for index, name in enumerate(plain)]
    name = _spelled(secret, upper, encoded)
    params.insert(min(position, len(params)), f"{name}=S3CR3T{value}")
    redacted = redact_query("&".join(params))
    assert "S3CR3T" not in redacted
    assert f"{name}=REDACTED" in redacted.split("&")
    assert [p for p in redacted.split("&") if not p.endswith("=REDACTED")] == [
        f"{n}=v{i}" for i, n in enumerate(plain)
    ]


# --- against the real PostgreSQL ----------------------------------------------------------


def _fresh_schema(server: PostgresServer, schema: str) -> str:
    """The URL of an empty schema first on the search path, so rows are counted exactly."""
    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    url = make_url(server.url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def audit_db(postgres_server: PostgresServer) -> str:
    return _fresh_schema(postgres_server, f"audit_trail_{os.getpid()}")


@pytest.fixture(scope="module")
def audit_engine(audit_db: str) -> Iterator[Engine]:
    engine = create_engine(audit_db)
    yield engine
    engine.dispose()


@pytest.mark.integration
@GENERATED
@given(value=TEXT)
def test_sanitized_values_are_stored_unchanged_by_postgresql(
    audit_engine: Engine, value: str
) -> None:
    narrow, wide = sanitize(value, 16), sanitize(value)
    with audit_engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE probe (narrow varchar(16), wide text)"))
        conn.execute(text("INSERT INTO probe VALUES (:n, :w)"), {"n": narrow, "w": wide})
        assert tuple(conn.execute(text("SELECT narrow, wide FROM probe")).one()) == (narrow, wide)
        conn.execute(text("DROP TABLE probe"))


def _stored(url: str, tag: str) -> dict[str, dict[str, Any]]:
    """Rows whose request id starts with `tag`, by request id; a duplicate fails the test."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = select(audit_log).where(audit_log.c.request_id.startswith(tag))
            rows = [dict(row._mapping) for row in conn.execute(query)]
    finally:
        engine.dispose()
    counts = Counter(row["request_id"] for row in rows)
    assert [rid for rid, n in counts.items() if n > 1] == [], "audited more than once"
    return {row["request_id"]: row for row in rows}


def _row(request_id: str, **changes: Any) -> AuditRow:
    row = AuditRow(
        time.time(), request_id, "svc", "service", "api_key", "GET", "/v1/x", "", 200, 1.0, None
    )
    return row._replace(**changes)


async def _raw_request(app: Any, path: str, query: bytes, request_id: str) -> int:
    """Call the ASGI app with a scope a client could make but no HTTP library sends."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": [(b"x-request-id", request_id.encode()), (b"x-api-key", API_KEY.encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    status = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


@pytest.mark.integration
def test_hostile_requests_are_audited_and_the_trail_goes_on(
    audit_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in settings_env(audit_db, str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    app = create()
    tag = f"hostile-{time.time_ns()}-"
    raw_query = b"q=\xff\x00&acc%65ss_token=hunter2&API_KEY=k&Pass%77ord=p&sensor=1"
    long_path = "/v1/forecasts/" + "a" * 100_000  # longer than any HTTP client sends

    async def raw_requests() -> dict[str, int]:
        return {
            "raw": await _raw_request(app, "/v1/forecasts/\udcff\udcfe", raw_query, tag + "raw"),
            "long": await _raw_request(app, long_path, b"", tag + "long"),
        }

    answers = asyncio.run(raw_requests())
    key = {"X-API-Key": API_KEY}
    with TestClient(app) as client:
        for name, path, headers in (
            ("nul", "/v1/forecasts/%00", {}),
            ("ctl", "/v1/forecasts/%01%1b[31m%7f%c2%85", key),
            ("after", "/v1/forecasts/717447", key),
        ):
            answers[name] = client.get(
                path, headers={"X-Request-ID": tag + name, **headers}
            ).status_code
        app.state.audit_writer.close()
    writer = app.state.audit_writer
    assert answers == {"raw": 200, "long": 200, "nul": 401, "ctl": 200, "after": 200}
    rows = _stored(audit_db, tag)
    assert sorted(rows) == sorted(tag + name for name in ("raw", "nul", "ctl", "long", "after"))
    assert (writer.quarantined, writer.dropped, writer.failed, writer.spilled) == (0, 0, 0, 0)

    nul = rows[tag + "nul"]
    assert (nul["path"], nul["status"], nul["subject"]) == ("/v1/forecasts/\\x00", 401, None)
    ctl = rows[tag + "ctl"]["path"]
    assert ctl == "/v1/forecasts/\\x01\\x1b[31m\\x7f\\x85"
    assert restore(ctl) == "/v1/forecasts/\x01\x1b[31m\x7f\x85"
    raw = rows[tag + "raw"]
    assert restore_bytes(raw["path"]) == b"/v1/forecasts/\xff\xfe"
    assert (
        raw["query"]
        == "q=\\udcff\\x00&acc%65ss_token=REDACTED&API_KEY=REDACTED&Pass%77ord=REDACTED&sensor=1"
    )
    long = rows[tag + "long"]["path"]
    digest = hashlib.sha256(long_path.encode()).hexdigest()[:16]
    assert len(long) <= TEXT_LIMIT and long.startswith("/v1/forecasts/aaaa")
    assert long.endswith(f"...[truncated {len(long_path)} chars sha256:{digest}]")
    assert rows[tag + "after"]["status"] == 200


def _audit_metric(writer: AuditWriter, outcome: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(AuditCollector(writer))
    return registry.get_sample_value("api_audit_rows_total", {"outcome": outcome})


@pytest.mark.integration
def test_a_refused_row_is_quarantined_and_its_batch_written(audit_db: str, tmp_path: Path) -> None:
    writer = AuditWriter(audit_db, spill_dir=tmp_path, flush_seconds=0.05)
    writer.start()
    tag = f"refused-{time.time_ns()}-"
    refused = {tag + "7", tag + "13"}
    for i in range(20):
        status = 2**40 if tag + str(i) in refused else 200  # beyond PostgreSQL's integer
        writer.submit(_row(tag + str(i), status=status, path=f"/v1/x/\x00{i}", subject="s" * 300))
    writer.close()
    rows = _stored(audit_db, tag)
    assert set(rows) == {tag + str(i) for i in range(20)} - refused
    assert {row["subject"] for row in rows.values()} == {sanitize("s" * 300, 256)}
    quarantined = SpillDir(tmp_path).quarantined()
    assert {entry["row"]["request_id"] for entry in quarantined} == refused
    assert all("integer out of range" in entry["reason"] for entry in quarantined)
    assert stat.S_IMODE((tmp_path / "quarantine.jsonl").stat().st_mode) == 0o600
    assert (writer.written, writer.quarantined) == (18, 2)
    assert _audit_metric(writer, "quarantined") == 2
    assert _audit_metric(writer, "written") == 18


@pytest.mark.integration
def test_a_dropped_table_keeps_the_rows_until_it_is_back(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Missing table or permission is the database's state, not the rows': kept, not
    quarantined, and the table is created again."""
    url = _fresh_schema(postgres_server, f"audit_dropped_{os.getpid()}")
    writer = AuditWriter(url, spill_dir=tmp_path, flush_seconds=0.05, retry_seconds=0.2)
    writer.start()
    tag = f"dropped-{time.time_ns()}-"
    try:
        writer.submit(_row(tag + "before"))
        assert wait_until(lambda: writer.written == 1, 30)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE api_audit_log"))
        engine.dispose()
        for i in range(10):
            writer.submit(_row(f"{tag}{i}"))
        assert wait_until(lambda: writer.written == 11, 30), (writer.written, writer.quarantined)
    finally:
        writer.close()
    assert set(_stored(url, tag)) == {f"{tag}{i}" for i in range(10)}
    assert (writer.quarantined, writer.dropped, writer.failed) == (0, 0, 0)


@pytest.mark.integration
@pytest.mark.slow
def test_postgres_down_during_a_burst_spills_and_replays(
    postgres_server: PostgresServer, audit_db: str, tmp_path: Path
) -> None:
    writer = AuditWriter(
        audit_db, spill_dir=tmp_path, max_pending=200, flush_seconds=0.05, retry_seconds=0.5
    )
    writer.start()
    tag = f"outage-{time.time_ns()}-"
    refused = set()

    def burst(first: int, count: int) -> None:
        for i in range(first, first + count):
            rid = f"{tag}{i}"
            if i % 50 == 7:
                refused.add(rid)
            writer.submit(
                _row(rid, path=f"/v1/forecasts/\x00{i}", status=2**40 if rid in refused else 200)
            )

    try:
        burst(0, 50)
        assert wait_until(lambda: writer.written + writer.quarantined == 50, 30)
        postgres_server.stop()
        for first in range(50, 650, 150):  # each burst fills the backlog past half...
            burst(first, 150)
            assert wait_until(lambda: writer.backlog < 100, 30)  # ...so it goes to disk
        assert writer.spilled >= 450 and SpillDir(tmp_path).files()
        postgres_server.start()
        done = lambda: writer.written + writer.quarantined == 650  # noqa: E731
        assert wait_until(done, 60), (writer.written, writer.quarantined, writer.spilled)
    finally:
        if not postgres_server.running():
            postgres_server.start()
        writer.close()
    rows = _stored(audit_db, tag)
    assert set(rows) == {f"{tag}{i}" for i in range(650)} - refused
    assert {e["row"]["request_id"] for e in SpillDir(tmp_path).quarantined()} == refused
    assert (writer.dropped, writer.failed, writer.quarantined) == (0, 0, len(refused))
    assert SpillDir(tmp_path).files() == []
    assert writer.replayed == writer.spilled
    assert _audit_metric(writer, "spilled") == _audit_metric(writer, "replayed") == writer.spilled


@pytest.mark.integration
def test_spill_files_are_replayed_and_unreadable_lines_quarantined(
    audit_db: str, tmp_path: Path
) -> None:
    nowhere = make_url(audit_db).set(port=free_port()).render_as_string(hide_password=False)
    lost_db = AuditWriter(nowhere, spill_dir=tmp_path, flush_seconds=0.05, retry_seconds=0.5)
    tag = f"replay-{time.time_ns()}-"
    for i in range(30):
        lost_db.submit(_row(f"{tag}{i}"))
    lost_db.close()  # the database never answered: the rows go to a spill file
    (spilled,) = SpillDir(tmp_path).files()
    with spilled.open("a") as out:
        out.write('{"request_id": "torn\n')  # as a disk full or a hand edit may leave it

    writer = AuditWriter(audit_db, spill_dir=tmp_path, flush_seconds=0.05)
    writer.start()
    assert wait_until(lambda: writer.replayed == 30, 30), writer.replayed
    writer.close()
    assert set(_stored(audit_db, tag)) == {f"{tag}{i}" for i in range(30)}
    assert SpillDir(tmp_path).files() == []
    (entry,) = SpillDir(tmp_path).quarantined()
    assert entry["line"] == '{"request_id": "torn' and "unreadable" in entry["reason"]
    assert (lost_db.spilled, writer.quarantined) == (30, 1)


def _start_api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "--factory", "audit_trail_app:serve"]
    command += ["--app-dir", str(REPO_ROOT / "tests"), "--port", str(port), "--host", "127.0.0.1"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_until(up, 60), log.read_text()
    return proc


def _requests(port: int, ids: list[str]) -> None:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": API_KEY}
    ) as client:
        for rid in ids:
            assert (
                client.get("/v1/forecasts/717447", headers={"X-Request-ID": rid}).status_code == 200
            )


def _terminate(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, as an orchestrator stops the API; uvicorn shuts down gracefully, then re-raises
    the signal to exit with it."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_with_a_backlog_drains_or_spills_and_the_next_start_replays(
    postgres_server: PostgresServer, audit_db: str, tmp_path: Path
) -> None:
    spill_dir, log = tmp_path / "spill", tmp_path / "api.log"
    env = settings_env(audit_db, str(spill_dir))
    env["TRAFFIC_API_AUDIT_FLUSH_SECONDS"] = "600"  # every row is still in the backlog at SIGTERM
    tag = f"sigterm-{time.time_ns()}-"
    down = [f"{tag}down-{i}" for i in range(300)]
    up = [f"{tag}up-{i}" for i in range(200)]
    port = free_port()
    proc = _start_api(env, port, log)
    try:
        postgres_server.stop()
        _requests(port, down)
        _terminate(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
        postgres_server.start()
    spilled = SpillDir(spill_dir).files()
    assert spilled and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in spilled)
    assert sum(len(p.read_text().splitlines()) for p in spilled) == len(down)
    assert f"audit: {len(down)} rows spilled to" in log.read_text()  # said before the exit

    proc = _start_api(env, port, log)
    try:
        assert wait_until(lambda: SpillDir(spill_dir).files() == [], 60), log.read_text()
        _requests(port, up)
        assert _stored(audit_db, tag + "up") == {}  # all in the backlog, as flushes are far apart
        _terminate(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = _stored(audit_db, tag)
    assert set(rows) == set(down) | set(up)
    assert SpillDir(spill_dir).files() == [] and SpillDir(spill_dir).quarantined() == []


def test_the_api_exports_the_audit_outcomes(tmp_path: Path) -> None:
    security = SecuritySettings(
        jwt_secret=JWT_SECRET,
        audit_url=f"sqlite:///{tmp_path / 'audit.db'}",
        audit_spill_dir=tmp_path,
    )
    app = create_app(security=security)
    exported = generate_latest(app.state.metrics).decode()
    for outcome in ("written", "replayed", "quarantined", "spilled", "dropped", "lost"):
        assert f'api_audit_rows_total{{outcome="{outcome}"}} 0.0' in exported
    assert "api_audit_backlog 0.0" in exported


def test_an_error_in_the_writer_does_not_end_the_trail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unforeseen error while writing (here: preparing the first row) is logged, the batch
    goes back to the backlog and the thread carries on."""
    prepare, calls = audit_module._prepare, []

    def failing_once(row: AuditRow) -> dict[str, Any]:
        calls.append(row.request_id)
        if len(calls) == 1:
            raise RuntimeError("unforeseen")
        return prepare(row)

    monkeypatch.setattr(audit_module, "_prepare", failing_once)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    writer = AuditWriter(url, spill_dir=tmp_path, flush_seconds=0.05, retry_seconds=0.1)
    writer.start()
    for i in range(5):
        writer.submit(_row(f"bug-{i}"))
    assert wait_until(lambda: writer.written == 5, 30)
    writer.close()
    assert set(_stored(url, "bug-")) == {f"bug-{i}" for i in range(5)}
    assert calls[0] == "bug-0" and writer.quarantined == 0
