"""A project-local PostgreSQL cluster from Debian's packages, listening on loopback."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.stack.postgres_tls import AUDIT_DATABASE, AUDIT_OWNER, AUDIT_ROLE, PostgresTls
from infra.stack.process import ServiceError, require_free_port, run_checked, wait_until


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, if any."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def install_postgres() -> Path:
    """Install Debian's PostgreSQL server when absent (needs root); returns its bin folder."""
    bindir = postgres_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0:
        raise ServiceError(
            "postgres: no PostgreSQL server found. Install it: sudo apt-get install postgresql"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_checked(["apt-get", "update", "-q"], "postgres: apt-get update", env=env)
    run_checked(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
        "postgres: apt-get install postgresql",
        env=env,
    )
    bindir = postgres_bindir()
    if bindir is None:
        raise ServiceError("postgres: installed postgresql but found no initdb")
    return bindir


def reachable_state_dir(preferred: Path) -> Path:
    """preferred, or (as root, when a parent folder is closed to the postgres user, e.g. a
    checkout under a 0700 folder) a folder under /var/tmp named after it."""
    if os.geteuid() != 0:
        return preferred
    probe = preferred
    while not probe.exists():
        probe = probe.parent
    if (
        subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(probe)]).returncode
        == 0
    ):
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path("/var/tmp/metr-traffic") / digest / preferred.name


@dataclass(frozen=True)
class PostgresServer:
    """One cluster: data, socket and log under state_dir, TCP on host:port only.

    PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user that
    Debian's package creates; the state folder must then be reachable by that user.
    With a `security_dir` (TRAFFIC_SECURITY=tls) TCP logins need TLS and scram-sha-256, the
    storage role's password is generated there (never the default) and the API's audit trail
    gets a database and an INSERT/SELECT-only role of its own (`postgres_tls`).
    """

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 5433
    username: str = "dagster"
    password: str = "dagster"
    database: str = "dagster"
    security_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", reachable_state_dir(self.state_dir))
        if self.tls is not None:
            object.__setattr__(self, "password", self.tls.password(self.username))

    @property
    def tls(self) -> PostgresTls | None:
        if self.security_dir is None:
            return None
        return PostgresTls(self.security_dir, self.state_dir, self.data_dir)

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def url(self) -> str:
        """The connection URL with the password: for processes' settings, never for printing."""
        url = (
            f"postgresql://{self.username}:{self.password}@{self.host}:{self.port}/{self.database}"
        )
        return url if self.tls is None else f"{url}?{self.tls.ssl_query()}"

    @property
    def audit_url(self) -> str:
        """Where the API writes its audit trail: under TLS its own database and role."""
        return self.url if self.tls is None else self.tls.audit_url(self.host, self.port)

    @property
    def display_url(self) -> str:
        """The URL to show people: the password replaced (it is DAGSTER_PG_PASSWORD)."""
        return f"postgresql://{self.username}:***@{self.host}:{self.port}/{self.database}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _prepare_dirs(self) -> None:
        for path in (self.state_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.state_dir, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
            probe = subprocess.run(self._as_owner(["test", "-w", str(self.state_dir)]))
            if probe.returncode != 0:
                raise ServiceError(
                    f"postgres: the postgres user cannot write {self.state_dir}; a parent folder "
                    "is not traversable. Set TRAFFIC_PG_STATE_DIR to a folder it can reach "
                    "(e.g. /var/tmp/metr-traffic/postgres)."
                )

    def _pg_ctl(self, bindir: Path, *args: str) -> list[str]:
        return self._as_owner([str(bindir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def running(self) -> bool:
        bindir = postgres_bindir()
        if bindir is None or not (self.data_dir / "PG_VERSION").exists():
            return False
        return subprocess.run(self._pg_ctl(bindir, "status"), capture_output=True).returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        bindir = install_postgres()
        if self.running():
            return
        require_free_port(self.host, self.port, "postgres")
        self._prepare_dirs()
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            run_checked(
                self._as_owner(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        "postgres",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C",
                    ]
                ),
                "postgres: initdb",
            )
        options = f"-c listen_addresses={self.host} -p {self.port} -k {self.socket_dir}"
        if self.tls is not None:
            self.tls.prepare()
            options += f" {self.tls.server_options()}"
        run_checked(
            self._pg_ctl(
                bindir,
                "-l",
                str(self.state_dir / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ),
            f"postgres: start (log: {self.state_dir / 'postgres.log'})",
        )
        if not wait_until(self._accepts_connections, timeout):
            raise ServiceError(f"postgres: not accepting connections on {self.host}:{self.port}")
        self._ensure_database(bindir)

    def _psql(self, bindir: Path, sql: str, database: str = "postgres") -> str:
        """Run `sql` through psql on its standard input: a password in it never shows in the
        process list, and psql's errors do not echo it into the raised message."""
        return run_checked(
            self._as_owner(
                [
                    str(bindir / "psql"),
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-d",
                    database,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-tA",
                    "-f",
                    "-",
                ]
            ),
            "postgres: psql",
            input=sql,
            redact=self._secrets(),
        ).stdout.strip()

    def _secrets(self) -> tuple[str, ...]:
        if self.tls is None:
            return (self.password,)
        return (self.password, self.tls.password(AUDIT_ROLE))

    def _ensure_database(self, bindir: Path) -> None:
        """Create the role and database if missing; keep the role's password in sync."""
        role_exists = self._psql(
            bindir, f"SELECT 1 FROM pg_roles WHERE rolname = '{self.username}'"
        )
        verb = "ALTER" if role_exists else "CREATE"
        password = self.password.replace("'", "''")
        self._psql(bindir, f"{verb} ROLE {self.username} LOGIN PASSWORD '{password}'")
        if not self._psql(bindir, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"):
            self._psql(bindir, f"CREATE DATABASE {self.database} OWNER {self.username}")
        if self.tls is not None:
            self._psql(bindir, self.tls.server_sql(self.username, self.database))
            exists = f"SELECT 1 FROM pg_database WHERE datname = '{AUDIT_DATABASE}'"
            if not self._psql(bindir, exists):
                self._psql(bindir, f"CREATE DATABASE {AUDIT_DATABASE} OWNER {AUDIT_OWNER}")
            self._psql(bindir, self.tls.audit_database_sql(), database=AUDIT_DATABASE)

    def _accepts_connections(self) -> bool:
        bindir = postgres_bindir()
        assert bindir is not None
        probe = [str(bindir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"]
        return subprocess.run(probe).returncode == 0

    def stop(self) -> bool:
        if not self.running():
            return False
        bindir = postgres_bindir()
        assert bindir is not None
        run_checked(self._pg_ctl(bindir, "-m", "fast", "-w", "stop"), "postgres: stop")
        return True

    def status(self) -> str:
        return f"running on {self.host}:{self.port}" if self.running() else "stopped"
