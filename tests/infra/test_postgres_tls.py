"""PostgreSQL under TRAFFIC_SECURITY=tls against a real cluster: TCP without TLS, a wrong
password, an untrusted server and the wrong role are refused, and the API's audit role can
add and read its rows but never change or remove them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors
from sqlalchemy.engine import make_url

from infra.stack.certs import CertificateAuthority
from infra.stack.postgres import PostgresServer
from infra.stack.postgres_tls import AUDIT_DATABASE
from serving.security.audit import AuditRow, AuditWriter

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _dsn(url: str, **changes: str) -> str:
    """A libpq connection string from a SQLAlchemy URL, with parameters changed."""
    parsed = make_url(url)
    params = {
        "host": parsed.host,
        "port": str(parsed.port),
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
        **parsed.query,
        **changes,
    }
    return " ".join(f"{key}={value}" for key, value in params.items())


@pytest.fixture
def audit(postgres_tls_server: PostgresServer) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(_dsn(postgres_tls_server.audit_url))
    connection.autocommit = True
    yield connection
    connection.close()


def test_storage_role_connects_over_verified_tls(postgres_tls_server: PostgresServer) -> None:
    with psycopg2.connect(_dsn(postgres_tls_server.url)) as connection, connection.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
    assert postgres_tls_server.password != "dagster", "a generated password, never the default"


def test_plaintext_tcp_is_refused(postgres_tls_server: PostgresServer) -> None:
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(_dsn(postgres_tls_server.url, sslmode="disable"))


def test_a_wrong_password_is_refused(postgres_tls_server: PostgresServer) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(_dsn(postgres_tls_server.url, password="dagster"))


def test_a_server_certificate_from_another_ca_is_not_trusted(
    postgres_tls_server: PostgresServer, tmp_path: Path
) -> None:
    stranger = CertificateAuthority(tmp_path)
    stranger.ensure()
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(_dsn(postgres_tls_server.url, sslrootcert=str(stranger.ca_cert)))


def test_each_role_is_refused_the_other_s_database(postgres_tls_server: PostgresServer) -> None:
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(_dsn(postgres_tls_server.url, dbname=AUDIT_DATABASE))
    database = postgres_tls_server.database
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(_dsn(postgres_tls_server.audit_url, dbname=database))


def test_the_audit_role_adds_and_reads_rows(audit: psycopg2.extensions.connection) -> None:
    tag = f"tls-{time.time_ns()}"
    with audit.cursor() as cursor:
        cursor.execute(
            "INSERT INTO api_audit_log (ts, request_id, method, path, status, duration_ms) "
            "VALUES (now(), %s, 'GET', '/v1/x', 200, 1.0)",
            (tag,),
        )
        cursor.execute("SELECT count(*) FROM api_audit_log WHERE request_id = %s", (tag,))
        assert cursor.fetchone() == (1,)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE api_audit_log SET status = 500",
        "DELETE FROM api_audit_log",
        "TRUNCATE api_audit_log",
        "DROP TABLE api_audit_log",
        "ALTER TABLE api_audit_log DROP COLUMN subject",
        "CREATE TABLE api_audit_log_copy (id int)",
    ],
)
def test_the_audit_role_can_neither_rewrite_nor_erase_the_trail(
    audit: psycopg2.extensions.connection, statement: str
) -> None:
    with audit.cursor() as cursor, pytest.raises(errors.InsufficientPrivilege):
        cursor.execute(statement)


def test_the_audit_role_cannot_grant_itself_more(audit: psycopg2.extensions.connection) -> None:
    """PostgreSQL answers a grant of privileges one does not hold with a warning only: the
    privilege must still be missing afterwards."""
    with audit.cursor() as cursor:
        cursor.execute("GRANT UPDATE, DELETE ON api_audit_log TO traffic_audit")
        assert any("no privileges were granted" in notice for notice in audit.notices)
        with pytest.raises(errors.InsufficientPrivilege):
            cursor.execute("DELETE FROM api_audit_log")


def test_the_api_audit_writer_records_through_its_role(
    postgres_tls_server: PostgresServer, audit: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    writer = AuditWriter(postgres_tls_server.audit_url, spill_dir=tmp_path, flush_seconds=0.05)
    writer.start()
    tag = f"writer-{time.time_ns()}"
    writer.submit(
        AuditRow(time.time(), tag, "svc", "planner", "jwt", "GET", "/v1/x", "", 200, 1.0, None)
    )
    writer.close(30)
    assert (writer.written, writer.quarantined, writer.spilled) == (1, 0, 0)
    with audit.cursor() as cursor:
        cursor.execute("SELECT subject FROM api_audit_log WHERE request_id = %s", (tag,))
        assert cursor.fetchall() == [("svc",)]
