"""`python -m infra.stack.soak`: the whole stack for a bounded time on SYNTHETIC data, under API
load, and a report whose accounting adds up. A short run: 2.2 minutes of producing at 1,440x,
two simulated days and the third's first hours, so two days are complete; the soak must then
retrain on exactly those (never on the day being delivered) and the API must serve that
model."""

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


@pytest.mark.timeout(2100)
def test_a_short_soak_accounts_for_every_event_and_retrains(test_state_dir: Path) -> None:
    run = subprocess.run(
        [
            sys.executable, "-m", "infra.stack.soak",
            "--minutes", "2.2", "--speedup", "1440", "--rate", "20", "--days", "3",
            "--catch-up", "900", "--require-retrain", "--retrain-wait", "900",
            "--state-dir", str(test_state_dir / "soak"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=2000,
    )  # fmt: skip
    assert run.stdout, run.stderr[-3000:]
    report = json.loads(run.stdout)
    events = report["events"]
    assert events["in"] > 100_000, report  # two simulated days of 207 sensors and more
    assert events["lake_rows"] + events["rejected_at_ingest"] == events["in"], report
    assert report["api"]["requests"] > 500 and report["api"]["errors"] == 0, report
    services = report["services"]
    assert not any(s["restarted"] for s in services.values()), report
    assert all(services[name]["peak_tree_mb"] > 20 for name in services), report
    models = report["models"]
    assert models["seed_version"] is not None and models["api_serves"] is not None, report
    runs = models["retrain_runs"]
    assert runs and all(r["status"] == "SUCCESS" for r in runs), report
    complete = ["2012-03-01", "2012-03-02"]  # the third day was still being delivered
    assert all(r["training_days"] == complete for r in runs), report
    published = {m["version"] for m in models["published_by_retrain"]}
    assert models["api_serves"] in published and models["api_switched_to_retrained"], report
    assert healthy(report) and run.returncode == 0, run.stderr[-3000:]
