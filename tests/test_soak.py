"""`python -m infra.stack.soak`: the whole stack for a bounded time on SYNTHETIC data, under API
load, and a report whose accounting adds up (a short run: 60 s of producing at 1,440x, which
is a simulated day and the next day's first readings: one complete day at most, and training
needs two, so no retrain may run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.stack.soak import ServiceWatch, healthy
from traffic_core.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_service_watch_sees_a_restart_and_a_tree_peak() -> None:
    watch = ServiceWatch()
    watch.sample(None)
    here = Path("/proc/self").resolve().name
    watch.sample(int(here))
    watch.sample(int(here))
    report = watch.report()
    assert report["restarted"] and report["down_samples"] == 1
    assert report["peak_tree_mb"] >= report["peak_process_mb"] > 10


@pytest.mark.timeout(1500)
def test_a_short_soak_accounts_for_every_event(test_state_dir: Path) -> None:
    run = subprocess.run(
        [
            sys.executable, "-m", "infra.stack.soak",
            "--minutes", "1", "--speedup", "1440", "--rate", "20", "--days", "2",
            "--catch-up", "900", "--state-dir", str(test_state_dir / "soak"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1400,
    )  # fmt: skip
    assert run.stdout, run.stderr[-3000:]
    report = json.loads(run.stdout)
    events = report["events"]
    assert events["in"] > 40_000, report  # most of a simulated day of 207 sensors
    assert events["lake_rows"] + events["rejected_at_ingest"] == events["in"], report
    assert report["api"]["requests"] > 500 and report["api"]["errors"] == 0, report
    services = report["services"]
    assert not any(s["restarted"] for s in services.values()), report
    assert all(services[name]["peak_tree_mb"] > 20 for name in services), report
    models = report["models"]
    assert models["seed_version"] is not None and models["api_serves"] is not None, report
    # one complete day at most (training needs two): nothing trains on the day being delivered
    assert models["retrain_runs"] == [] and models["published_by_retrain"] == [], report
    assert healthy(report) and run.returncode == 0, run.stderr[-3000:]
