"""PostgreSQL under TRAFFIC_SECURITY=tls: TLS-only TCP logins with scram-sha-256, and separate
roles for Dagster's storage and the API's audit trail.

The audit trail lives in a database of its own whose table belongs to a role nobody logs in
as; the API's role may only INSERT and SELECT there, so the API can neither rewrite nor erase
what it recorded. Neither login role may connect to the other's database.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from infra.stack.certs import CertificateAuthority
from infra.stack.passwords import ensure_password
from infra.stack.process import write_private
from serving.security.audit import audit_log

AUDIT_DATABASE = "traffic_audit"
AUDIT_ROLE = "traffic_audit"
AUDIT_OWNER = "traffic_audit_owner"

HBA = """\
# TRAFFIC_SECURITY=tls: TCP only over TLS with scram-sha-256; no plaintext TCP entry exists, so
# such a connection is refused. The administrator reaches the server through its own socket.
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 trust
hostssl all       all       127.0.0.1/32   scram-sha-256
hostssl all       all       ::1/128        scram-sha-256
"""


def audit_table_ddl() -> str:
    """The API's audit table and its indexes as PostgreSQL DDL, created only if missing."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    statements = [str(CreateTable(audit_log, if_not_exists=True).compile(dialect=dialect))]
    statements += [
        str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
        for index in sorted(audit_log.indexes, key=lambda i: str(i.name))
    ]
    return ";\n".join(statements) + ";\n"


def _ensure_role(name: str, password: str | None) -> str:
    login = f"LOGIN PASSWORD '{password}'" if password else "NOLOGIN"
    return (
        f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') "
        f"THEN ALTER ROLE {name} {login}; ELSE CREATE ROLE {name} {login}; END IF; END $$;\n"
    )


@dataclass(frozen=True)
class PostgresTls:
    """The TLS files, host rules and roles of one cluster (`state_dir`, `data_dir`)."""

    security_dir: Path
    state_dir: Path
    data_dir: Path

    @property
    def ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.security_dir)

    @property
    def cert_file(self) -> Path:
        return self.state_dir / "tls" / "server.crt"

    @property
    def key_file(self) -> Path:
        return self.state_dir / "tls" / "server.key"

    def password_file(self, role: str) -> Path:
        return self.security_dir / "postgres-users" / f"{role}.password"

    def password(self, role: str) -> str:
        return ensure_password(self.password_file(role))

    def prepare(self) -> None:
        """Copy the server's certificate and key where the server's user owns them (it
        refuses a key others can read) and allow only TLS logins."""
        self.ca.ensure()
        write_private(self.key_file, self.ca.key("postgres").read_text())
        shutil.copyfile(self.ca.cert("postgres"), self.cert_file)
        (self.data_dir / "pg_hba.conf").write_text(HBA)
        if os.geteuid() == 0:
            for path in (self.cert_file.parent, self.cert_file, self.key_file):
                shutil.chown(path, "postgres", "postgres")
            shutil.chown(self.data_dir / "pg_hba.conf", "postgres", "postgres")

    def server_options(self) -> str:
        return (
            f"-c ssl=on -c ssl_cert_file={self.cert_file} -c ssl_key_file={self.key_file} "
            "-c ssl_min_protocol_version=TLSv1.2 -c password_encryption=scram-sha-256"
        )

    def server_sql(self, storage_role: str, storage_database: str) -> str:
        """Run as the administrator in the `postgres` database: roles and database access."""
        return (
            _ensure_role(AUDIT_OWNER, None)
            + _ensure_role(AUDIT_ROLE, self.password(AUDIT_ROLE))
            + f"REVOKE CONNECT, TEMPORARY ON DATABASE {storage_database} FROM PUBLIC;\n"
            + f"GRANT CONNECT ON DATABASE {storage_database} TO {storage_role};\n"
        )

    def audit_database_sql(self) -> str:
        """Run as the administrator in the audit database: its table, owned by a role nobody
        logs in as, and the audit role's INSERT and SELECT (and the id sequence)."""
        return (
            f"REVOKE CONNECT, TEMPORARY ON DATABASE {AUDIT_DATABASE} FROM PUBLIC;\n"
            f"GRANT CONNECT ON DATABASE {AUDIT_DATABASE} TO {AUDIT_ROLE};\n"
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC;\n"
            f"SET ROLE {AUDIT_OWNER};\n" + audit_table_ddl() + "RESET ROLE;\n"
            f"GRANT USAGE ON SCHEMA public TO {AUDIT_ROLE};\n"
            f"GRANT SELECT, INSERT ON {audit_log.name} TO {AUDIT_ROLE};\n"
            f"GRANT USAGE ON SEQUENCE {audit_log.name}_id_seq TO {AUDIT_ROLE};\n"
        )

    def ssl_query(self) -> str:
        """libpq settings that demand TLS and check the server's name against the stack's CA."""
        return f"sslmode=verify-full&sslrootcert={self.ca.ca_cert}"

    def audit_url(self, host: str, port: int) -> str:
        password = self.password(AUDIT_ROLE)
        return (
            f"postgresql://{AUDIT_ROLE}:{password}@{host}:{port}/{AUDIT_DATABASE}"
            f"?{self.ssl_query()}"
        )
