"""The services command: clear failures for missing tools and taken ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra.stack.kafka import KafkaBroker
from infra.stack.process import ServiceError
from traffic_core.settings import LOCAL_STATE_DIR


def test_taken_port_is_reported_clearly(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        broker = KafkaBroker(
            state_dir=tmp_path / "kafka",
            libs_dir=LOCAL_STATE_DIR / "kafka" / "libs",
            port=port,
            controller_port=port + 1,
        )
        with pytest.raises(ServiceError, match=rf"port 127.0.0.1:{port} is already taken"):
            broker.start(timeout=5)
    assert not any(node.process.running() for node in broker.nodes)


def test_missing_java_is_reported_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    broker = KafkaBroker(
        state_dir=tmp_path / "kafka", libs_dir=LOCAL_STATE_DIR / "kafka" / "libs", port=1
    )
    with pytest.raises(ServiceError, match="Java not found"):
        broker.start(timeout=5)
