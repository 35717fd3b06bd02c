"""PostgreSQL as the production store survives a restart.

A real `dagster-daemon` on the project's instance configuration (dagster.yaml plus the
PostgreSQL storage block) runs a sensor that asks for one run per new feed item, while the
test stops PostgreSQL (fast shutdown) for a while and starts it again. The daemon keeps
running, ticks resume, every item's run succeeds exactly once, the cursor ends on the last
item and the event log holds each item's materialization. The API's audit writer keeps the
rows submitted during the outage and writes them once the database is back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)
from dagster._core.scheduler.instigation import InstigatorState, TickStatus
from postgres_resilience_defs import (
    FEED_FILE_VARIABLE,
    HOLD_STEP_VARIABLE,
    STEP_ASSET,
    held_marker,
    release_marker,
    run_key,
    step_job,
)
from sqlalchemy import create_engine, func, select

from infra.stack.dagster import prepare_home
from infra.stack.postgres import PostgresServer
from infra.stack.process import wait_until
from serving.security.audit import AuditRow, AuditWriter, audit_log
from traffic_core.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOT = int(os.environ.get("TRAFFIC_TEST_SLOT", "0"))
ITEMS = 8
FEED_INTERVAL = 2.0  # seconds between the items fed during the outage
HOLD_STEP = 2  # this step's run is mid-execution when PostgreSQL stops
RELEASE_AFTER = 3.0  # seconds into the outage the held step finishes
OUTAGE_SECONDS = 12.0
SENSOR_NAME = "feed_sensor"

T = TypeVar("T")


@pytest.fixture(scope="module")
def work_dir() -> Path:
    """Outside the session's state folder (wiped at session start), so a cluster left running
    by an aborted session can still be found and stopped; logs stay here after the test."""
    return REPO_ROOT / ".local" / ("test-pg-restart" if SLOT == 0 else f"test-{SLOT}-pg-restart")


@pytest.fixture(scope="module")
def restartable_postgres(work_dir: Path) -> Iterator[PostgresServer]:
    """A cluster of its own: the session's stays up for the other tests."""
    server = PostgresServer(state_dir=work_dir / "postgres", port=15483 + 100 * SLOT)
    server.stop()
    if server.state_dir.exists():
        shutil.rmtree(server.state_dir)  # an empty instance: runs counted are this session's
    server.start()
    yield server
    server.stop()


def _pg_env(server: PostgresServer) -> dict[str, str]:
    return {
        "DAGSTER_PG_HOST": server.host,
        "DAGSTER_PG_PORT": str(server.port),
        "DAGSTER_PG_USERNAME": server.username,
        "DAGSTER_PG_PASSWORD": server.password,
        "DAGSTER_PG_DB": server.database,
    }


def _or_none(query: Callable[[], T]) -> T | None:
    """Storage reads fail while the database is down; the test just asks again later."""
    try:
        return query()
    except Exception:
        return None


class Feed:
    """Raises the item count in the feed file from a thread: the items up to the held one
    (plus one queued behind it) at once, the rest at a steady pace once the outage begins, so
    they arrive while PostgreSQL is down."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.outage = threading.Event()
        self._write(0)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _write(self, count: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(count))
        tmp.replace(self.path)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._write(HOLD_STEP + 1)
        self.outage.wait(600)
        for item in range(HOLD_STEP + 2, ITEMS + 1):
            time.sleep(FEED_INTERVAL)
            self._write(item)

    def join(self) -> None:
        self._thread.join(ITEMS * FEED_INTERVAL + 10)


def _sensor_state(instance: DagsterInstance) -> InstigatorState | None:
    states = [s for s in instance.all_instigator_state() if s.name == SENSOR_NAME]
    return states[0] if states else None


def _ticks(instance: DagsterInstance) -> list:
    state = _sensor_state(instance)
    if state is None:
        return []
    return list(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1000))


def _step_runs(instance: DagsterInstance) -> list[DagsterRun]:
    """The sensor's runs and their automatic retries (same job, same run config)."""
    return list(instance.get_runs(RunsFilter(job_name=step_job.name)))


def _step(run: DagsterRun) -> int:
    return run.run_config["ops"]["record_step"]["config"]["step"]


def _all_succeeded(instance: DagsterInstance) -> bool:
    runs = _or_none(lambda: _step_runs(instance)) or []
    done = {_step(r) for r in runs if r.status == DagsterRunStatus.SUCCESS}
    return done >= set(range(1, ITEMS + 1))


def _start_daemon(home: Path, env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    daemon = Path(sys.executable).with_name("dagster-daemon")
    command = [
        str(daemon),
        "run",
        "-f",
        str(Path(__file__).with_name("postgres_resilience_defs.py")),
        "-d",
        str(Path(__file__).parent),
    ]
    with log_file.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **env, "DAGSTER_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run workers stop with it
        )


def _stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the daemon's process group (code server, run workers), SIGKILL to what
    is left after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)

    def group_gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    if not wait_until(group_gone, 15):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_daemon_and_sensor_runs_survive_a_postgres_restart(
    restartable_postgres: PostgresServer, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = restartable_postgres
    tmp_path = work_dir / "dagster"
    if tmp_path.exists():
        shutil.rmtree(tmp_path)
    tmp_path.mkdir(parents=True)
    feed_file = tmp_path / "feed.txt"
    env = {
        **_pg_env(server),
        FEED_FILE_VARIABLE: str(feed_file),
        HOLD_STEP_VARIABLE: str(HOLD_STEP),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the instance config reads them here too
    home = prepare_home(tmp_path / "home", env)
    feed = Feed(feed_file)
    daemon_log = tmp_path / "daemon.log"
    instance = DagsterInstance.from_config(str(home))
    proc = _start_daemon(home, env, daemon_log)
    try:
        # The daemon loads the code location and the sensor (on by default) starts ticking.
        assert wait_until(lambda: bool(_or_none(lambda: _ticks(instance))), 120, 1.0), (
            daemon_log.read_text()[-4000:]
        )
        feed.start()
        assert wait_until(held_marker(feed_file).exists, 240), daemon_log.read_text()[-4000:]

        down_at = time.monotonic()
        down_wall = datetime.now(UTC)
        server.stop()
        feed.outage.set()
        time.sleep(RELEASE_AFTER)
        release_marker(feed_file).write_text("")
        time.sleep(OUTAGE_SECONDS - RELEASE_AFTER)
        assert proc.poll() is None, "the daemon exited while PostgreSQL was down"
        server.start()
        up_at = time.monotonic()
        up_wall = datetime.now(UTC)
        outage = up_at - down_at

        def ticked_after_restart() -> bool:
            ticks = _or_none(lambda: _ticks(instance)) or []
            return any(t.timestamp > up_wall.timestamp() for t in ticks)

        assert wait_until(ticked_after_restart, 120, 0.5), daemon_log.read_text()[-4000:]
        resumed_after = time.monotonic() - up_at
        feed.join()
        assert wait_until(lambda: _all_succeeded(instance), 420, 1.0), (
            _describe(instance) + daemon_log.read_text()[-4000:]
        )
        all_done_after = time.monotonic() - up_at
        assert proc.poll() is None, "the daemon must recover by itself, not by a restart"

        runs = _step_runs(instance)
        # The sensor asked for each item exactly once: one first attempt per run key.
        first_attempts = [r for r in runs if r.parent_run_id is None]
        per_key = Counter(r.tags.get("dagster/run_key") for r in first_attempts)
        assert per_key == Counter(run_key(step) for step in range(1, ITEMS + 1))
        # Each item succeeded exactly once; anything else is an attempt the outage failed.
        succeeded = [r for r in runs if r.status == DagsterRunStatus.SUCCESS]
        assert sorted(_step(r) for r in succeeded) == list(range(1, ITEMS + 1))
        retried = [r for r in runs if r.parent_run_id is not None]
        failed = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
        assert {r.status for r in runs} <= {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE}
        assert len(failed) == len(retried), "every failed attempt was retried"

        state = _sensor_state(instance)
        assert state is not None and state.instigator_data.cursor == str(ITEMS)

        # The event log holds each successful run's materialization of its own step.
        records = instance.fetch_materializations(AssetKey(STEP_ASSET), limit=1000).records
        by_run = {r.run_id: r.asset_materialization.partition for r in records}
        assert {r.run_id: str(_step(r)) for r in succeeded}.items() <= by_run.items()
        for run in succeeded:
            kinds = {e.dagster_event_type for e in instance.all_logs(run.run_id)}
            assert {DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS} <= kinds

        ticks = _ticks(instance)
        failed_ticks = [t for t in ticks if t.status == TickStatus.FAILURE]
        print(
            f"\nPostgreSQL down {outage:.1f}s (from {down_wall:%H:%M:%S}); sensor ticking again "
            f"{resumed_after:.1f}s after restart; all {ITEMS} runs done {all_done_after:.1f}s "
            f"after restart; {len(retried)} runs retried; {len(ticks)} ticks, "
            f"{len(failed_ticks)} failed"
        )
    finally:
        _stop_daemon(proc)
        instance.dispose()
        if not server.running():
            server.start()


def _describe(instance: DagsterInstance) -> str:
    runs = _or_none(lambda: _step_runs(instance)) or []
    lines = [f"{_step(r):3d} {r.run_id[:8]} {r.status.value} {r.parent_run_id}" for r in runs]
    return "runs:\n" + "\n".join(sorted(lines)) + "\n"


def _audit_row(request_id: str) -> AuditRow:
    return AuditRow(
        time.time(), request_id, "ana", "auditor", "jwt", "GET", "/v1/x", "", 200, 1.0, None
    )


def _audit_count(url: str, request_ids: set[str]) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).where(audit_log.c.request_id.in_(request_ids))
            return conn.execute(query).scalar_one()
    finally:
        engine.dispose()


def test_audit_rows_submitted_while_postgres_is_down_are_written_once(
    restartable_postgres: PostgresServer,
) -> None:
    server = restartable_postgres
    writer = AuditWriter(server.url, flush_seconds=0.05, retry_seconds=0.5)
    writer.start()
    tag = f"restart-{time.time_ns()}"

    def submit(first: int, count: int) -> set[str]:
        ids = {f"{tag}-{i}" for i in range(first, first + count)}
        for request_id in sorted(ids):
            writer.submit(_audit_row(request_id))
        return ids

    try:
        before = submit(0, 50)
        assert wait_until(lambda: writer.written == 50, 20)
        server.stop()
        during = submit(50, 200)
        time.sleep(3.0)  # several failed attempts while the database is down
        assert writer.written == 50 and writer.dropped == 0
        server.start()
        after = submit(250, 50)
        assert wait_until(lambda: writer.written == 300, 30), (writer.written, writer.failed)
    finally:
        if not server.running():
            server.start()
        writer.close()
    assert (writer.dropped, writer.failed) == (0, 0)
    ids = before | during | after
    assert _audit_count(server.url, ids) == len(ids) == 300


def test_audit_backlog_limit_holds_while_postgres_is_down(
    restartable_postgres: PostgresServer,
) -> None:
    """Beyond the backlog limit rows are dropped and counted; the kept ones are written."""
    server = restartable_postgres
    writer = AuditWriter(server.url, max_pending=100, flush_seconds=0.05, retry_seconds=0.5)
    writer.start()
    tag = f"limit-{time.time_ns()}"
    try:
        server.stop()
        for i in range(250):
            writer.submit(_audit_row(f"{tag}-{i}"))
        assert writer.dropped == 150
        server.start()
        assert wait_until(lambda: writer.written == 100, 30), (writer.written, writer.failed)
    finally:
        if not server.running():
            server.start()
        writer.close()
    kept = {f"{tag}-{i}" for i in range(100)}
    assert _audit_count(server.url, kept) == 100
    assert _audit_count(server.url, {f"{tag}-{i}" for i in range(250)}) == 100
