"""Detached background processes tracked by pid files, stopped by process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRIVATE_UMASK = 0o077
"""Files the stack and its services create are their owner's alone: logs can hold request
details and the state folders hold secrets."""


class ServiceError(RuntimeError):
    """A service could not be set up, started or stopped; the message says what to do."""


def private_file(path: Path, mode: int = 0o600) -> Path:
    """Create `path` (and its folder) readable by its owner only (`mode` 0o640 where a group
    must read it), or narrow an existing file to `mode`; returns path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, mode))
    os.chmod(path, mode)  # an older file, or a umask wider than mode's complement
    return path


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path`'s text, never letting anyone else read it meanwhile."""
    private_file(path, mode).write_text(text)


@dataclass(frozen=True)
class ManagedProcess:
    """One long-running process with its pid file, its log, and a marker in its command line.

    The marker guards against a recycled pid: a pid whose command line lacks it is not ours.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        if self.marker not in cmdline or _is_zombie(pid):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def spawn(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        """Start argv in its own session with output to the log file (0600); returns the pid.

        The process runs with umask 077, so the files it creates are private too."""
        with private_file(self.log_file).open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
                umask=PRIVATE_UMASK,
            )
        write_private(self.pid_file, str(proc.pid))
        # Until exec() completes the child still shows our command line; wait for it.
        wait_until(lambda: self.pid() is not None or proc.poll() is not None, 10.0, 0.02)
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the process group, then SIGKILL it after timeout. True if it was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        # Children may start sessions of their own (e.g. Dagster's code servers and run
        # workers), and a dying supervisor may still spawn one: stop the whole tree and the
        # whole process group (pgid == pid: spawn() starts a session), then sweep stragglers.
        tree = [pid, *descendants(pid)]
        _signal_group(pid, signal.SIGTERM)
        for child in tree[1:]:
            _signal(child, signal.SIGTERM)
        wait_until(lambda: not any(map(_alive, tree)), timeout)
        for _ in range(20):
            stragglers = set(tree) | set(group_members(pid))
            stragglers = {
                p for p in stragglers | {d for s in stragglers for d in descendants(s)} if _alive(p)
            }
            if not stragglers:
                break
            for member in stragglers:
                _signal(member, signal.SIGKILL)
            time.sleep(0.25)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the whole process group at once, as a crash would."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 10.0)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log yet)"


def descendants(pid: int) -> list[int]:
    """Every process below pid, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        nxt = [c for p in frontier for c in children.get(p, [])]
        found += nxt
        frontier = nxt
    return found


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), sig)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll check() until it is true or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_free_port(host: str, port: int, service: str) -> None:
    if port_in_use(host, port):
        raise ServiceError(
            f"{service}: port {host}:{port} is already taken by another process. "
            f"Stop it (e.g. `ss -ltnp 'sport = :{port}'` shows who) or choose another port."
        )


def run_checked(
    argv: Sequence[str], what: str, redact: Sequence[str] = (), **kwargs: object
) -> subprocess.CompletedProcess:
    """Run a short set-up command; on failure raise with its output (`redact`: secrets the
    command was given, replaced by *** in that output)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        output = proc.stderr or proc.stdout
        for secret in filter(None, redact):
            output = output.replace(secret, "***")
        raise ServiceError(f"{what} failed ({proc.returncode}): {output}")
    return proc


def wait_for_service(
    service: str,
    processes: Sequence[ManagedProcess],
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    logs: Path,
) -> None:
    """Poll ready() until timeout, failing fast with its log when one of a service's processes
    (one that has a pid file, so was started) has exited."""

    def check() -> bool:
        for process in processes:
            if process.pid_file.exists() and not process.running():
                raise ServiceError(
                    f"{service}: {process.name} exited; last log lines:\n"
                    f"{process.log_tail()}\n(full log: {process.log_file})"
                )
        return ready()

    if not wait_until(check, timeout, interval=0.5):
        raise ServiceError(
            f"{service}: timed out after {timeout:.0f}s waiting for {what}; see {logs}"
        )


def get_json(url: str) -> dict[str, Any] | None:
    """A status endpoint's JSON, or None when the service does not answer (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
