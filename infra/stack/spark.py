"""A standalone Spark cluster (one master, N workers) run from the pyspark wheel's own jars.

The wheel is a complete Spark home (`jars/`, `bin/`), so no Spark download is needed. Every
daemon, its web UI and the executors it launches bind to loopback (SPARK_LOCAL_IP); worker
scratch space and logs stay under the cluster's state folder.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyspark

from infra.stack.process import (
    ManagedProcess,
    ServiceError,
    get_json,
    require_free_port,
    wait_for_service,
)
from traffic_core.settings import SparkSettings

PYSPARK_HOME = Path(pyspark.__file__).resolve().parent
"""The installed wheel: workers find executor jars under `<SPARK_HOME>/jars`."""

DEFAULT_PORT = 7077
DEFAULT_WEBUI_PORT = 8080


@dataclass(frozen=True)
class SparkCluster:
    """Master on host:port (web UI on webui_port), workers' web UIs on the ports right above it.

    Each worker offers `worker_cores` cores and `worker_memory` to executors; an application's
    `spark.executor.memory` must fit in it, or the application waits for resources forever.
    """

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    webui_port: int = DEFAULT_WEBUI_PORT
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    daemon_heap: str = "512m"
    spark_home: Path = PYSPARK_HOME

    @classmethod
    def from_env(cls, state_root: Path) -> SparkCluster:
        """The cluster SPARK_MASTER points at (`spark://host:port`), else the default ports."""
        master = SparkSettings().master
        host, port = "127.0.0.1", DEFAULT_PORT
        if master.startswith("spark://"):
            address = master.removeprefix("spark://").split(",")[0]
            host, _, port_text = address.rpartition(":")
            port = int(port_text)
        return cls(
            state_dir=state_root / "spark",
            host=host,
            port=port,
            webui_port=int(os.environ.get("SPARK_MASTER_WEBUI_PORT", DEFAULT_WEBUI_PORT)),
            workers=int(os.environ.get("SPARK_WORKER_INSTANCES", "2")),
        )

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"

    def worker_webui_port(self, index: int) -> int:
        return self.webui_port + 1 + index

    def worker_webui_url(self, index: int) -> str:
        return f"http://{self.host}:{self.worker_webui_port(index)}"

    def worker_dir(self, index: int) -> Path:
        return self.state_dir / f"worker-{index}" / "work"

    @property
    def master_process(self) -> ManagedProcess:
        return ManagedProcess(
            name="spark-master",
            pid_file=self.state_dir / "master.pid",
            log_file=self.state_dir / "logs" / "master.log",
            marker=f"-Dtraffic.spark.master={self.state_dir}",
        )

    def worker_process(self, index: int) -> ManagedProcess:
        return ManagedProcess(
            name=f"spark-worker-{index}",
            pid_file=self.state_dir / f"worker-{index}.pid",
            log_file=self.state_dir / "logs" / f"worker-{index}.log",
            # The trailing space ends the path: worker-1 never matches worker-10's command line.
            marker=f"--work-dir {self.worker_dir(index)} ",
        )

    def _processes(self) -> list[ManagedProcess]:
        return [self.master_process, *map(self.worker_process, range(self.workers))]

    def _env(self) -> dict[str, str]:
        """SPARK_HOME and SPARK_SCALA_VERSION let workers build executor command lines (what
        bin/load-spark-env.sh would export); SPARK_LOCAL_IP keeps RPC and web UIs (which bind
        0.0.0.0 otherwise) of daemons and executors on loopback."""
        return {
            "SPARK_HOME": str(self.spark_home),
            "SPARK_SCALA_VERSION": scala_version(self.spark_home),
            "SPARK_LOCAL_IP": self.host,
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        }

    def _java(self, main: str, property_marker: str = "") -> list[str]:
        return [
            "java",
            f"-Xmx{self.daemon_heap}",
            *([property_marker] if property_marker else []),
            "-cp",
            f"{self.spark_home / 'jars'}/*",
            main,
        ]

    def _master_argv(self) -> list[str]:
        return [
            *self._java("org.apache.spark.deploy.master.Master", self.master_process.marker),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--webui-port",
            str(self.webui_port),
        ]

    def _worker_argv(self, index: int) -> list[str]:
        return [
            *self._java("org.apache.spark.deploy.worker.Worker"),
            self.master_url,
            "--host",
            self.host,
            "--cores",
            str(self.worker_cores),
            "--memory",
            self.worker_memory,
            "--webui-port",
            str(self.worker_webui_port(index)),
            "--work-dir",
            str(self.worker_dir(index)),
            "--properties-file",
            str(self._worker_properties()),
        ]

    def _worker_properties(self) -> Path:
        """Finished applications' folders are removed after a day, so test runs don't pile up."""
        path = self.state_dir / "worker.properties"
        path.write_text(
            "spark.worker.cleanup.enabled=true\n"
            "spark.worker.cleanup.appDataTtl=86400\n"
            "spark.worker.cleanup.interval=3600\n"
        )
        return path

    def start(self, timeout: float = 120.0) -> None:
        """Start whatever part is not running, then wait until every worker is ALIVE."""
        self.launch(timeout)
        self.wait_ready(timeout)

    def launch(self, timeout: float = 120.0) -> None:
        """Start the master (waiting until it answers, so workers register at once) and the
        workers, without waiting for them: callers may do other work meanwhile."""
        if shutil.which("java") is None:
            raise ServiceError(
                "spark: Java not found. Install a JRE 17+: apt-get install openjdk-17-jre-headless"
            )
        if not (self.spark_home / "jars").is_dir():
            raise ServiceError(f"spark: no jars folder in {self.spark_home}; reinstall pyspark")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for process in self._processes():
            if not process.running():  # a pid file left by a crash would read as "exited"
                process.pid_file.unlink(missing_ok=True)
        master = self.master_process
        if not master.running():
            require_free_port(self.host, self.port, "spark master")
            require_free_port(self.host, self.webui_port, "spark master web UI")
            master.spawn(self._master_argv(), env=self._env(), cwd=self.state_dir)
        self._wait(lambda: self.master_state() is not None, "the master", timeout)
        for index in range(self.workers):
            worker = self.worker_process(index)
            if worker.running():
                continue
            require_free_port(self.host, self.worker_webui_port(index), f"spark worker {index}")
            self.worker_dir(index).mkdir(parents=True, exist_ok=True)
            worker.spawn(self._worker_argv(index), env=self._env(), cwd=self.state_dir)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the master lists every worker ALIVE."""
        self._wait(
            lambda: self.alive_workers() >= self.workers,
            f"{self.workers} workers to register ALIVE with {self.master_url}",
            timeout,
        )

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        wait_for_service("spark", self._processes(), ready, what, timeout, self.state_dir / "logs")

    def master_state(self) -> dict[str, Any] | None:
        """The master's JSON status (workers, active and completed applications), or None."""
        return get_json(f"{self.webui_url}/json/")

    def worker_state(self, index: int) -> dict[str, Any] | None:
        """A worker's JSON status (its executors, running and finished), or None."""
        return get_json(f"{self.worker_webui_url(index)}/json/")

    def alive_workers(self) -> int:
        """Workers of this cluster (by web UI address) the master lists as ALIVE."""
        state = self.master_state() or {}
        ours = {self.worker_webui_url(i) for i in range(self.workers)}
        return sum(
            1
            for worker in state.get("workers", [])
            if worker.get("state") == "ALIVE" and worker.get("webuiaddress") in ours
        )

    def running(self) -> bool:
        return self.master_process.running()

    def stop(self) -> bool:
        """Stop the workers (with their executors), then the master. True if any part ran."""
        stopped = [self.worker_process(i).stop(timeout=20.0) for i in range(self.workers)]
        return self.master_process.stop(timeout=20.0) or any(stopped)

    def status(self) -> str:
        pid = self.master_process.pid()
        if pid is None:
            return "stopped"
        return (
            f"running (master pid {pid}) at {self.master_url}, web UI {self.webui_url}, "
            f"{self.alive_workers()}/{self.workers} workers alive"
        )


def scala_version(spark_home: Path) -> str:
    """The Scala binary version the jars were built for, from `spark-core_<version>-*.jar`."""
    cores = sorted((spark_home / "jars").glob("spark-core_*.jar"))
    if not cores:
        raise ServiceError(f"spark: no spark-core jar in {spark_home / 'jars'}; reinstall pyspark")
    return cores[0].name.removeprefix("spark-core_").split("-")[0]
