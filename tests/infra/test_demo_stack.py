"""`python -m infra.stack demo` brings the stack up, says where it is, and Ctrl-C brings it all
down: no stray java, postgres or dagster processes are left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from traffic_core.settings import LOCAL_STATE_DIR, REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line and "pytest" not in line:
            found.append(line)
    return found


def materialized_partitions() -> int:
    query = (
        '{ assetNodeOrError(assetKey: {path: ["raw_traffic_events"]}) '
        "{ ... on AssetNode { partitionStats { numMaterialized } } } }"
    )
    request = urllib.request.Request(
        "http://127.0.0.1:23000/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        node = json.load(reply)["data"]["assetNodeOrError"]
    return int(node["partitionStats"]["numMaterialized"])


def assert_forecasts_served(api: str, token: str) -> None:
    """The seed model forecasts the replayed days as soon as the live state has them."""
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{api}/v1/ready", timeout=5) as reply:
                if reply.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(2)
    request = urllib.request.Request(
        f"{api}/v1/forecasts/773869", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = json.load(reply)
    assert [h["minutes"] for h in body["horizons"]] == [15, 30, 60]
    assert body["model_version"]


@pytest.mark.timeout(900)
def test_demo_starts_everything_and_ctrl_c_stops_it(test_state_dir: Path) -> None:
    state = test_state_dir / "demo"
    env = {
        **os.environ,
        "TRAFFIC_STATE_DIR": str(state),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:29092",
        "DAGSTER_PG_PORT": "25433",
        "DAGSTER_WEBSERVER_PORT": "23000",
        "TRAFFIC_API_PORT": "28000",
        "TRAFFIC_DASHBOARD_PORT": "28501",
        "TRAFFIC_SCHEMA_REGISTRY_URL": "http://127.0.0.1:28081",
    }
    # The demo state folder shares the downloaded broker jars instead of fetching them again.
    (state / "kafka").mkdir(parents=True)
    (state / "kafka" / "libs").symlink_to(LOCAL_STATE_DIR / "kafka" / "libs")
    demo = subprocess.Popen(
        [sys.executable, "-m", "infra.stack", "demo", "--data", "real"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 240
        assert demo.stdout is not None
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(output)
        assert "Dagster UI:  http://127.0.0.1:23000" in text, text
        assert "Kafka:       127.0.0.1:29092" in text, text
        assert "instance storage: PostgreSQL" in text, text
        assert "topic traffic-events: created" in text, text
        assert "subject traffic-events-value: ids [1], compatibility BACKWARD" in text, text
        with urllib.request.urlopen("http://127.0.0.1:23000/server_info", timeout=5) as reply:
            assert reply.status == 200
        assert processes_mentioning(str(state))
        assert "Dashboard:   http://127.0.0.1:28501" in text, text
        export = next(x for x in output if "export TOKEN=" in x)
        token = Path(export.split("$(cat ", 1)[1].strip().rstrip(")")).read_text().strip()
        assert_forecasts_served("http://127.0.0.1:28000", token)
        with urllib.request.urlopen("http://127.0.0.1:28501/_stcore/health", timeout=5) as reply:
            assert reply.status == 200
        # The daemon's Kafka sensor turns the replayed six days into six raw partitions.
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and materialized_partitions() < 6:
            time.sleep(5)
        assert materialized_partitions() == 6
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, "".join(output) + rest
    assert "kafka     stopped" in rest and "dagster   stopped" in rest
    assert "api       stopped" in rest and "dashboard stopped" in rest
    assert "registry  stopped" in rest
    time.sleep(1)
    assert processes_mentioning(str(state)) == []
    assert processes_mentioning("--port 23000") == []
    assert processes_mentioning("--port 28000") == []
    assert processes_mentioning("--port 28081") == []
