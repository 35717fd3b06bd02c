"""Dagster instance home and the local webserver + daemon (`dagster dev`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.stack.process import ManagedProcess, ServiceError
from infra.stack.web import WebService

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_RUN_RETRIES = REPO_ROOT / "infra" / "dagster" / "postgres_run_retries.yaml"
"""Retries for runs that met the database down; appended whenever storage is PostgreSQL."""
PG_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def storage_snippet(env: Mapping[str, str]) -> Path | None:
    """The PostgreSQL storage block to use, or None for the SQLite default."""
    if env.get("DAGSTER_PG_URL"):
        return REPO_ROOT / "infra" / "dagster" / "postgres_url_storage.yaml"
    present = [name for name in PG_VARIABLES if env.get(name)]
    if not present:
        return None
    missing = sorted(set(PG_VARIABLES) - set(present))
    if missing:
        raise ServiceError(
            f"dagster: PostgreSQL storage needs all of {', '.join(PG_VARIABLES)}; missing "
            f"{', '.join(missing)} (or set DAGSTER_PG_URL)"
        )
    return REPO_ROOT / "infra" / "dagster" / "postgres_storage.yaml"


def prepare_home(home: Path, env: Mapping[str, str] = os.environ) -> Path:
    """Write $DAGSTER_HOME/dagster.yaml: the project's dagster.yaml plus the storage choice
    (and, on PostgreSQL, retries for runs an outage failed)."""
    home.mkdir(parents=True, exist_ok=True)
    text = (REPO_ROOT / "dagster.yaml").read_text()
    snippet = storage_snippet(env)
    if snippet is not None:
        text += "\n" + snippet.read_text() + "\n" + PG_RUN_RETRIES.read_text()
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return home


@dataclass(frozen=True)
class DagsterUI:
    """`dagster dev`: webserver, daemon (sensors, schedules, run queue) and code server."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 3000

    @property
    def home(self) -> Path:
        return self.state_dir / "home"

    @property
    def web(self) -> WebService:
        dagster = Path(sys.executable).with_name("dagster")
        command = (
            str(dagster),
            "dev",
            "--workspace",
            str(REPO_ROOT / "workspace.yaml"),
            "--host",
            self.host,
            "--port",
            str(self.port),
        )
        marker = f"--port {self.port}"
        return WebService(
            "dagster", self.state_dir, command, "/server_info", marker, self.host, self.port
        )

    @property
    def url(self) -> str:
        return self.web.url

    @property
    def process(self) -> ManagedProcess:
        return self.web.process

    def answers(self) -> bool:
        return self.web.answers()

    def start(self, env: Mapping[str, str] | None = None, timeout: float = 180.0) -> None:
        env = {**os.environ, **(env or {})}
        prepare_home(self.home, env)
        self.web.start({**env, "DAGSTER_HOME": str(self.home)}, timeout)

    def stop(self) -> bool:
        return self.web.stop()

    def status(self) -> str:
        return self.web.status()
