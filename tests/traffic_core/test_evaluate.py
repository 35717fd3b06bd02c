"""The evaluation CLI on the real six days: a model trained on 1-5 March scored on 6 March,
checked against the metrics computed independently; the DCRNN split rule and the h5 path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from evaluation_helpers import assert_scores_match, expected_scores

from traffic_core import features as f
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.evaluation.__main__ import is_full_metr_la, main
from traffic_core.evaluation.splits import dcrnn_split, dcrnn_test_window, targets_from
from traffic_core.model_bundle import CONTEXT_FILE, INTERVALS_FILE, onnx_file
from traffic_core.models import onnx_predict
from traffic_core.models.quick import train_and_publish
from traffic_core.registry import ModelRegistry
from traffic_core.settings import REPO_ROOT
from traffic_core.windows import WINDOW

pytestmark = pytest.mark.slow
SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
TEST_FROM = pd.Timestamp("2012-03-06")


@pytest.fixture(scope="module")
def speeds(shared_data: Path) -> pd.DataFrame:
    return load_speed_csv(shared_data / SIX_DAYS)


@pytest.fixture(scope="module")
def registry(
    speeds: pd.DataFrame, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A ridge model per horizon trained on 1-5 March only."""
    root = tmp_path_factory.mktemp("registry")
    graph = load_metr_la_graph(shared_data / "metr-la")
    train = speeds.loc[: TEST_FROM - WINDOW]
    train_and_publish(root, train, graph, "ridge", {"alpha": 10.0}, code_version="test")
    return root


def tree_forecasts(
    speeds: pd.DataFrame, folder: Path
) -> tuple[list[str], dict[int, np.ndarray], dict[int, float]]:
    """A published tree version's sensors, ONNX forecasts on every row of `speeds` and
    interval half-widths, read from its files without the CLI."""
    context = f.FeatureContext.load(folder / CONTEXT_FILE)
    X = f.make_features(speeds, context)[list(f.FEATURE_NAMES)].to_numpy()
    forecasts = {h: onnx_predict((folder / onnx_file(h)).read_bytes(), X) for h in f.HORIZONS}
    intervals = json.loads((folder / INTERVALS_FILE).read_text())
    return (
        context.sensor_ids,
        forecasts,
        {h: intervals[str(h)]["half_width_mph"] for h in f.HORIZONS},
    )


def run(argv: list[str], tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    out = tmp_path / "evaluation.json"
    assert main([*argv, "--json", str(out)], **kwargs) == 0
    return json.loads(out.read_text())


def test_cli_scores_equal_the_metrics_on_the_same_rows(
    speeds: pd.DataFrame, registry: Path, shared_data: Path, tmp_path: Path
) -> None:
    argv = ["--data", str(shared_data / SIX_DAYS), "--test-from", "2012-03-06"]
    report = run([*argv, "--registry", str(registry)], tmp_path)
    version = ModelRegistry(registry).latest()
    assert report["model_version"] == version
    assert report["rows"] == 1728 and report["sensors"] == 207
    assert list(report["evaluations"]) == ["test_from"]  # six days are not the full file
    evaluation = report["evaluations"]["test_from"]
    assert evaluation["historical_average_fitted_until"] == "2012-03-05 23:55:00"
    assert evaluation["leaked_training_days"] == []
    for minutes in f.HORIZONS:
        # every 6 March target of every sensor: the CSV has no missing reading
        assert evaluation["points"][str(minutes)] == {"valid": 288 * 207, "scored": 288 * 207}
        assert evaluation["intervals"][str(minutes)]["nominal"] == 0.9

    scored_from = {h: TEST_FROM - steps * WINDOW for h, steps in f.HORIZONS.items()}
    ids, forecasts, widths = tree_forecasts(speeds, ModelRegistry(registry).path(version))
    expected = expected_scores(speeds, ids, forecasts, scored_from, widths)
    assert_scores_match(evaluation, expected)
    sixty = evaluation["scores"]["60"]
    assert sixty["model"]["mae"] < 0.9 * sixty["persistence"]["mae"]


def test_cli_runs_as_a_module(registry: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "traffic_core.evaluation",
            "--data",
            str(shared_data / SIX_DAYS),
            "--test-from",
            "2012-03-06 12:00",
            "--registry",
            str(registry),
            "--json",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "targets from 2012-03-06 12:00:00" in done.stdout
    assert "historical_average" in done.stdout and "interval coverage" in done.stdout
    report = json.loads(out.read_text())
    assert report["evaluations"]["test_from"]["points"]["15"]["valid"] == 144 * 207


def test_unusable_arguments_are_reported(
    registry: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data", str(shared_data / SIX_DAYS), "--registry", str(registry)]
    for argv, message in [
        ([*data, "--test-from", "2012-03-01"], "no readings before 2012-03-01"),
        ([*data, "--test-from", "2012-04-01"], "before any forecast to score"),
        ([*data, "--test-from", "2012-03-06", "--model", "nope"], "model nope"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


def test_dcrnn_split_of_the_full_metr_la_file() -> None:
    split = dcrnn_split(34_272)
    assert (split.train.start, split.val.start, split.test.start) == (11, 23_985, 27_410)
    assert split.test.stop == 34_260  # the last sample's targets end at the last row
    samples = 34_272 - 23
    assert (len(split.train), len(split.val), len(split.test)) == (23_974, 3_425, 6_850)
    assert len(split.test) == round(0.2 * samples)
    with pytest.raises(ValueError, match="no DCRNN sample"):
        dcrnn_split(24)


def test_windows_say_which_forecasts_count() -> None:
    index = pd.date_range("2012-03-01", periods=1000, freq="5min")
    window = targets_from(pd.Timestamp("2012-03-02"), index[-1])
    assert window.first_target == pd.Timestamp("2012-03-02")
    issued = pd.DatetimeIndex(["2012-03-01 23:00", "2012-03-01 23:45", "2012-03-02"])
    assert window.scored(60, issued).tolist() == [True, True, True]
    assert window.scored(15, issued).tolist() == [False, True, True]
    dcrnn = dcrnn_test_window(index)
    first = dcrnn_split(len(index)).test.start
    assert dcrnn.first_issue == index[first]
    assert dcrnn.first_target == index[first + 3]


@pytest.fixture
def small_h5(speeds: pd.DataFrame, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The six days as pandas writes metr-la.h5 (key "df", 0.0 for a missing reading), with a
    two-hour outage of the first sensor on 6 March; and the speeds it holds."""
    holey = speeds.copy()
    holey.loc["2012-03-06 08:00":"2012-03-06 09:55", holey.columns[0]] = np.nan
    path = tmp_path / "metr-la-small.h5"
    holey.astype("float64").fillna(0.0).to_hdf(path, key="df")
    return path, holey


def test_h5_gets_the_dcrnn_split_when_it_is_the_full_file(
    registry: Path, small_h5: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    path, holey = small_h5
    assert not is_full_metr_la(path)
    argv = ["--data", str(path), "--test-from", "2012-03-06", "--registry", str(registry)]
    assert list(run(argv, tmp_path)["evaluations"]) == ["test_from"]

    report = run(argv, tmp_path, full_metr_la=lambda p: p == path)
    assert list(report["evaluations"]) == ["test_from", "dcrnn_70_10_20"]
    dcrnn = report["evaluations"]["dcrnn_70_10_20"]
    test = dcrnn_split(len(holey)).test
    first, last = holey.index[test.start], holey.index[test.stop - 1]
    assert dcrnn["issued_from"] == dict.fromkeys(("15", "30", "60"), str(first))
    assert dcrnn["issued_until"] == str(last)
    assert dcrnn["published_mae"]["DCRNN"] == {"15": 2.77, "30": 3.15, "60": 3.6}
    assert dcrnn["leaked_training_days"] == ["2012-03-05"]  # its test starts on 5 March
    points = dcrnn["points"]["60"]
    assert points["scored"] < points["valid"]  # persistence has nothing late in the outage
    folder = ModelRegistry(registry).path(report["model_version"])
    ids, forecasts, widths = tree_forecasts(holey, folder)
    expected = expected_scores(
        holey, ids, forecasts, dict.fromkeys(f.HORIZONS, first), widths, last
    )
    assert_scores_match(dcrnn, expected)
