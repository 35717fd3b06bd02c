"""`python -m infra.stack start streams` runs the stream processor against the broker it is
given, its metrics endpoint answers, and `stop streams` ends it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from api_fixtures import free_port

from infra.stack.kafka import KafkaBroker
from traffic_core.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def stack(command: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "infra.stack", command, "streams"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_stack_starts_and_stops_the_stream_processor(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "TRAFFIC_STATE_DIR": str(tmp_path),
        "TRAFFIC_STREAM_METRICS_PORT": str(port),
    }
    try:
        assert "streams   running" in stack("start", env)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert b"traffic_stream_windows_emitted_total" in answer.read()
        assert "streams   running" in stack("status", env)
    finally:
        assert "streams   stopped" in stack("stop", env)
    assert "streams   stopped" in stack("status", env)
