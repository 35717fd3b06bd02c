"""A single-machine HDFS (one NameNode, N DataNodes) assembled from Maven Central jars.

Every daemon listens on loopback on ports of its own and keeps its storage, generated
configuration and log under the cluster's state folder; the NameNode is formatted on its first
start. Replication is 2 by default, so one DataNode may die without losing a block, and the
NameNode declares a silent DataNode dead within about 15 s (heartbeat 1 s, recheck 2 s: 2 x
recheck + 10 x heartbeat) and stops placing new blocks on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from infra.stack.maven import copy_dependencies
from infra.stack.process import (
    ManagedProcess,
    ServiceError,
    get_json,
    require_free_port,
    run_checked,
    wait_for_service,
)

INFRA_DIR = Path(__file__).resolve().parents[1] / "hdfs"
POM = INFRA_DIR / "pom.xml"
CLUSTER_ID = "metr-traffic-lake"
NAMENODE_MAIN = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE_MAIN = "org.apache.hadoop.hdfs.server.datanode.DataNode"
JAVA_OPTIONS = (
    "-XX:+UseG1GC",
    "-Djava.net.preferIPv4Stack=true",
    # Hadoop 3.4 reflects into these on Java 17.
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
)


@dataclass(frozen=True)
class HdfsCluster:
    """NameNode RPC on host:port (web UI and JMX on http_port); DataNode i on the three ports
    from `datanode_port + 10*i` (data transfer, web, IPC)."""

    state_dir: Path
    libs_dir: Path
    host: str = "127.0.0.1"
    port: int = 8020
    http_port: int = 9870
    datanode_port: int = 9866
    datanodes: int = 2
    replication: int = 2
    heap: str = "256m"

    @classmethod
    def from_env(cls, state_root: Path) -> HdfsCluster:
        """The cluster HDFS_NAMENODE_PORT and HDFS_DATANODES describe (default ports else)."""
        return cls(
            state_dir=state_root / "hdfs" / "cluster",
            libs_dir=state_root / "hdfs" / "libs",
            port=int(os.environ.get("HDFS_NAMENODE_PORT", "8020")),
            datanodes=int(os.environ.get("HDFS_DATANODES", "2")),
        )

    @property
    def url(self) -> str:
        """The file-system URL clients put before a path: `hdfs://host:port`."""
        return f"hdfs://{self.host}:{self.port}"

    def datanode_ports(self, index: int) -> tuple[int, int, int]:
        first = self.datanode_port + 10 * index
        return first, first + 1, first + 2

    @property
    def namenode(self) -> ManagedProcess:
        return self._process("namenode")

    def datanode(self, index: int) -> ManagedProcess:
        return self._process(f"datanode-{index}")

    def _process(self, name: str) -> ManagedProcess:
        return ManagedProcess(
            name=f"hdfs-{name}",
            pid_file=self.state_dir / f"{name}.pid",
            log_file=self.state_dir / "logs" / f"{name}.log",
            # The trailing separator ends the name: datanode-1 never matches datanode-10.
            marker=f"{self._conf_dir(name)}:",
        )

    def _processes(self) -> list[ManagedProcess]:
        return [self.namenode, *map(self.datanode, range(self.datanodes))]

    def _conf_dir(self, name: str) -> Path:
        return self.state_dir / "conf" / name

    def ensure_jars(self) -> None:
        """Copy hadoop-hdfs and its runtime dependencies from Maven Central, once per pom."""
        copy_dependencies(POM, self.libs_dir, "hdfs")

    def _common_properties(self) -> dict[str, object]:
        return {
            "fs.defaultFS": self.url,
            "dfs.replication": self.replication,
            "dfs.namenode.rpc-address": f"{self.host}:{self.port}",
            "dfs.namenode.http-address": f"{self.host}:{self.http_port}",
            "dfs.namenode.name.dir": (self.state_dir / "namenode").as_uri(),
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            "dfs.namenode.safemode.extension": 0,
            "dfs.heartbeat.interval": 1,
            "dfs.namenode.heartbeat.recheck-interval": 2000,
            "dfs.namenode.stale.datanode.interval": 3000,
            "dfs.namenode.avoid.read.stale.datanode": "true",
            "dfs.namenode.avoid.write.stale.datanode": "true",
            "dfs.namenode.write.stale.datanode.ratio": "1.0",
            "hadoop.tmp.dir": str(self.state_dir / "tmp"),
        }

    def _datanode_properties(self, index: int) -> dict[str, object]:
        transfer, http, ipc = self.datanode_ports(index)
        return {
            "dfs.datanode.data.dir": (self.state_dir / f"datanode-{index}").as_uri(),
            "dfs.datanode.address": f"{self.host}:{transfer}",
            "dfs.datanode.http.address": f"{self.host}:{http}",
            "dfs.datanode.ipc.address": f"{self.host}:{ipc}",
            "dfs.datanode.hostname": self.host,
        }

    def _write_conf(self, name: str, properties: dict[str, object]) -> Path:
        """`hdfs-site.xml` and `core-site.xml` (fs.defaultFS only) in the daemon's own folder."""
        folder = self._conf_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hdfs-site.xml").write_text(_site_xml(properties))
        (folder / "core-site.xml").write_text(_site_xml({"fs.defaultFS": self.url}))
        shutil.copyfile(INFRA_DIR / "log4j.properties", folder / "log4j.properties")
        return folder

    def _java(self, name: str, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            *JAVA_OPTIONS,
            "-cp",
            f"{self._conf_dir(name)}:{self._webapps_root()}:{self.libs_dir}/*",
            main,
            *args,
        ]

    def _webapps_root(self) -> Path:
        """A class-path folder with the empty `webapps/*` folders the daemons' HTTP servers
        require: the Maven jars lack the HTML UI, while the JMX JSON (`/jmx`) needs none."""
        root = self.state_dir / "web"
        for app in ("hdfs", "datanode", "static"):
            (root / "webapps" / app).mkdir(parents=True, exist_ok=True)
        return root

    def _format(self) -> None:
        if (self.state_dir / "namenode" / "current" / "VERSION").exists():
            return
        run_checked(
            self._java(
                "namenode", NAMENODE_MAIN, "-format", "-nonInteractive", "-clusterid", CLUSTER_ID
            ),
            "hdfs: formatting the NameNode",
        )

    def start(self, timeout: float = 120.0) -> None:
        """Start whatever daemon is not running and wait until every DataNode is live and the
        NameNode has left safe mode."""
        if shutil.which("java") is None:
            raise ServiceError(
                "hdfs: Java not found. Install a JRE 17+: apt-get install openjdk-17-jre-headless"
            )
        self.ensure_jars()
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        common = self._common_properties()
        self._write_conf("namenode", common)
        self._format()
        if not self.namenode.running():
            self.namenode.pid_file.unlink(missing_ok=True)
            require_free_port(self.host, self.port, "hdfs namenode")
            require_free_port(self.host, self.http_port, "hdfs namenode web UI")
            self.namenode.spawn(self._java("namenode", NAMENODE_MAIN), cwd=self.state_dir)
        for index in range(self.datanodes):
            self.start_datanode(index, wait=False)
        self.wait_ready(timeout)

    def start_datanode(self, index: int, wait: bool = True, timeout: float = 60.0) -> None:
        """Start DataNode `index` unless it runs (a DataNode killed in a test comes back)."""
        process = self.datanode(index)
        if not process.running():
            process.pid_file.unlink(missing_ok=True)
            for port in self.datanode_ports(index):
                require_free_port(self.host, port, f"hdfs datanode {index}")
            name = f"datanode-{index}"
            self._write_conf(
                name, {**self._common_properties(), **self._datanode_properties(index)}
            )
            process.spawn(self._java(name, DATANODE_MAIN), cwd=self.state_dir)
        if wait:
            self._wait(lambda: self.live_datanodes() >= self.datanodes, "DataNodes", timeout)

    def kill_datanode(self, index: int) -> bool:
        """SIGKILL DataNode `index`, as a machine loss would."""
        return self.datanode(index).kill()

    def wait_ready(self, timeout: float = 120.0) -> None:
        self._wait(
            lambda: self.live_datanodes() >= self.datanodes and not self.in_safe_mode(),
            f"{self.datanodes} live DataNodes and the NameNode out of safe mode",
            timeout,
        )

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        wait_for_service("hdfs", self._processes(), ready, what, timeout, self.state_dir / "logs")

    def _namenode_info(self) -> dict[str, Any]:
        """The NameNode's `NameNodeInfo` and `FSNamesystemState` JMX beans, merged ({} if it
        does not answer)."""
        beans: dict[str, Any] = {}
        for query in (
            "Hadoop:service=NameNode,name=NameNodeInfo",
            "Hadoop:service=NameNode,name=FSNamesystemState",
        ):
            found = get_json(f"http://{self.host}:{self.http_port}/jmx?qry={query}")
            for bean in (found or {}).get("beans", []):
                beans.update(bean)
        return beans

    def live_datanodes(self) -> int:
        """DataNodes the NameNode counts live (0 when it does not answer)."""
        return int(self._namenode_info().get("NumLiveDataNodes", 0))

    def in_safe_mode(self) -> bool:
        info = self._namenode_info()
        return not info or bool(info.get("Safemode"))

    def running(self) -> bool:
        return self.namenode.running()

    def stop(self) -> bool:
        """Stop the DataNodes, then the NameNode. True if any daemon ran."""
        stopped = [self.datanode(i).stop(timeout=20.0) for i in range(self.datanodes)]
        return self.namenode.stop(timeout=20.0) or any(stopped)

    def status(self) -> str:
        pid = self.namenode.pid()
        if pid is None:
            return "stopped"
        return (
            f"running (namenode pid {pid}) at {self.url}, web UI http://{self.host}:"
            f"{self.http_port}, {self.live_datanodes()}/{self.datanodes} datanodes live"
        )


def _site_xml(properties: dict[str, object]) -> str:
    rows = "".join(
        f"  <property><name>{escape(name)}</name><value>{escape(str(value))}</value></property>\n"
        for name, value in properties.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{rows}</configuration>\n'
