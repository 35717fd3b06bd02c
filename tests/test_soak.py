"""`python -m infra.stack.soak`: the whole stack for a bounded time on SYNTHETIC data, under API
load, and a report whose accounting adds up; a retrain during the stream publishes a model on
complete days only and the API serves it (a short run: 130 s of producing at 1,440x, which is
two simulated days and two hours, so two days are complete)."""

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


@pytest.mark.timeout(2400)
def test_a_short_soak_accounts_for_every_event_and_retrains(test_state_dir: Path) -> None:
    run = subprocess.run(
        [
            sys.executable, "-m", "infra.stack.soak",
            "--minutes", str(130 / 60), "--speedup", "1440", "--rate", "20", "--days", "3",
            "--catch-up", "900", "--require-retrain", "--retrain-wait", "900",
            "--state-dir", str(test_state_dir / "soak"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=2300,
    )  # fmt: skip
    assert run.stdout, run.stderr[-3000:]
    report = json.loads(run.stdout)
    events = report["events"]
    assert events["in"] > 2 * 59_616, report  # two simulated days of 207 sensors and more
    assert events["lake_rows"] + events["rejected_at_ingest"] == events["in"], report
    assert report["api"]["requests"] > 500 and report["api"]["errors"] == 0, report
    services = report["services"]
    assert not any(s["restarted"] for s in services.values()), report
    assert all(services[name]["peak_tree_mb"] > 20 for name in services), report
    models = report["models"]
    [published, *_] = models["published_by_retrain"]
    assert published["lake_days"] == ["2012-03-01", "2012-03-02"], report  # never 3 March
    assert models["api_switched_to_retrained"] and models["api_serves"] != models["seed_version"]
    assert any(r["status"] == "SUCCESS" for r in models["retrain_runs"]), report
    assert models["one_sensor_answers_by_version"].get(models["api_serves"], 0) > 0, report
    assert healthy(report) and run.returncode == 0, run.stderr[-3000:]
