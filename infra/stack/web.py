"""HTTP services of the stack started from this checkout: the prediction API (uvicorn), the
planner dashboard (Streamlit) and the stream processor (its metrics endpoint), each a managed
process answering a health URL."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.stack.certs import CertificateAuthority
from infra.stack.process import ManagedProcess, ServiceError, require_free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class WebService:
    name: str
    state_dir: Path
    command: tuple[str, ...]
    health_path: str
    marker: str
    host: str = "127.0.0.1"
    port: int = 8000
    ca_file: Path | None = None
    """Set when the service speaks HTTPS with a certificate of this CA."""

    @property
    def url(self) -> str:
        return f"{'http' if self.ca_file is None else 'https'}://{self.host}:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name=self.name,
            pid_file=self.state_dir / f"{self.name}.pid",
            log_file=self.state_dir / f"{self.name}.log",
            marker=self.marker,
        )

    def answers(self) -> bool:
        try:
            context = (
                None if self.ca_file is None else ssl.create_default_context(cafile=self.ca_file)
            )
            with urllib.request.urlopen(
                self.url + self.health_path, timeout=2, context=context
            ) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self, env: Mapping[str, str] | None = None, timeout: float = 90.0) -> None:
        if not self.process.running():
            require_free_port(self.host, self.port, self.name)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.process.spawn(list(self.command), env={**os.environ, **(env or {})}, cwd=REPO_ROOT)

        def ready() -> bool:
            if not self.process.running():
                raise ServiceError(
                    f"{self.name}: exited during start-up; last log lines:\n"
                    f"{self.process.log_tail()}"
                )
            return self.answers()

        if not wait_until(ready, timeout, interval=0.5):
            raise ServiceError(f"{self.name}: no answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> bool:
        return self.process.stop(timeout=30.0)

    def status(self) -> str:
        pid = self.process.pid()
        return f"running (pid {pid}) at {self.url}" if pid else "stopped"


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _uvicorn_https(tls: CertificateAuthority | None, service: str) -> tuple[str, ...]:
    """uvicorn's HTTPS arguments with `service`'s certificate from the stack's CA (none: HTTP)."""
    if tls is None:
        return ()
    tls.ensure()
    return ("--ssl-keyfile", str(tls.key(service)), "--ssl-certfile", str(tls.cert(service)))


def api_service(
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    extra_args: Sequence[str] = (),
    tls: CertificateAuthority | None = None,
) -> WebService:
    """`uvicorn serving.app:app`; healthy once it serves HTTP (readiness is /v1/ready); with
    `tls` over HTTPS only, with the API's certificate from the stack's CA.

    The API writes its own access lines; clients connect directly, so uvicorn's
    X-Forwarded-For handling (an address parse per request) is off.
    """
    command = (
        _bin("uvicorn"),
        "serving.app:app",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
        "--no-proxy-headers",
        *extra_args,
        *_uvicorn_https(tls, "api"),
    )
    ca_file = None if tls is None else tls.ca_cert
    marker = f"--port {port}"
    return WebService("api", state_dir, command, "/v1/health", marker, host, port, ca_file)


def dashboard_service(
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    tls: CertificateAuthority | None = None,
) -> WebService:
    """`streamlit run dashboard/app.py`; with `tls` over HTTPS with the dashboard's certificate
    (Streamlit's own TLS, for the loopback stack; a deployment terminates TLS in front of it)."""
    https: tuple[str, ...] = ()
    if tls is not None:
        tls.ensure()
        https = (
            "--server.sslCertFile",
            str(tls.cert("dashboard")),
            "--server.sslKeyFile",
            str(tls.key("dashboard")),
        )
    command = (
        _bin("streamlit"),
        "run",
        str(REPO_ROOT / "dashboard" / "app.py"),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        *https,
    )
    marker = f"--server.port {port}"
    ca_file = None if tls is None else tls.ca_cert
    return WebService(
        "dashboard", state_dir, command, "/_stcore/health", marker, host, port, ca_file
    )


def registry_service(
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8081,
    tls: CertificateAuthority | None = None,
) -> WebService:
    """`python -m schema_registry`: the Confluent-API schema registry, its schemas kept in
    `state_dir`; healthy once it lists subjects; with `tls` over HTTPS only."""
    command = (
        sys.executable,
        "-m",
        "schema_registry",
        "--data-dir",
        str(state_dir),
        "--host",
        host,
        "--port",
        str(port),
        *_uvicorn_https(tls, "schema-registry"),
    )
    ca_file = None if tls is None else tls.ca_cert
    marker = f"--port {port}"
    return WebService("registry", state_dir, command, "/subjects", marker, host, port, ca_file)


def streams_service(state_dir: Path, host: str = "127.0.0.1", port: int = 9110) -> WebService:
    """`python -m traffic_core.streams`, one instance; up once its metrics endpoint answers."""
    command = (
        sys.executable,
        "-m",
        "traffic_core.streams",
        "--instance-id",
        "local",
        "--state-dir",
        str(state_dir / "state"),
        "--metrics-host",
        host,
        "--metrics-port",
        str(port),
    )
    marker = f"traffic_core.streams --instance-id local --state-dir {state_dir / 'state'}"
    return WebService("streams", state_dir, command, "/metrics", marker, host, port)
