"""The neural family: deterministic training, a loss blind to missing readings, ONNX parity,
the registry round trip through onnxruntime alone, live forecasts equal to batch ones.

A small network on 30 real sensors over two real days keeps the file well under a minute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evaluation_helpers import assert_scores_match, expected_scores
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.evaluation.__main__ import main as evaluate
from traffic_core.features import CLOCK_NAMES, HORIZONS, LOOKBACK
from traffic_core.model_bundle import BundleError
from traffic_core.models.neural import (
    NeuralConfig,
    NeuralModel,
    check_inputs,
    init_params,
    make_samples,
    masked_mae_loss,
    train_neural,
)
from traffic_core.models.neural_onnx import to_onnx
from traffic_core.models.neural_publish import neural_builder
from traffic_core.neural_bundle import NEURAL_ONNX, NeuralBundle
from traffic_core.registry import ModelRegistry
from traffic_core.windows import WINDOW

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
TINY = NeuralConfig(
    residual_channels=8,
    dilation_channels=8,
    skip_channels=8,
    end_channels=16,
    dilations=(8, 3),
    adaptive_rank=4,
    diffusion_steps=1,
    batch_size=32,
    max_epochs=2,
    cv_splits=3,
)
SETTINGS = settings(derandomize=True, deadline=None, max_examples=25, database=None)


@pytest.fixture(scope="module")
def data(shared_data: Path) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Two real days of 30 sensors, with a few hours of readings blanked (missing)."""
    graph = load_metr_la_graph(shared_data / "metr-la")
    ids = list(graph.sensor_ids[:30])
    speeds = load_speed_csv(shared_data / SIX_DAYS).loc[:"2012-03-02 23:55", ids].copy()
    speeds.iloc[100:130, :5] = np.nan
    speeds.iloc[400:410, 10:20] = 0.0
    return speeds, graph.subgraph(ids).adjacency, ids


@pytest.fixture(scope="module")
def model(data: tuple[pd.DataFrame, np.ndarray, list[str]]) -> NeuralModel:
    speeds, adjacency, ids = data
    return train_neural(speeds, adjacency, ids, TINY)


def test_training_is_deterministic(
    data: tuple[pd.DataFrame, np.ndarray, list[str]], model: NeuralModel
) -> None:
    speeds, adjacency, ids = data
    again = train_neural(speeds, adjacency, ids, TINY)
    assert again.history == model.history
    assert again.params.keys() == model.params.keys()
    for name, weights in model.params.items():
        np.testing.assert_array_equal(again.params[name], weights, err_msg=name)
    start = init_params(TINY, len(ids), model.params["start_w"].shape[1])
    assert not np.array_equal(start["start_w"], model.params["start_w"])  # training moved them
    assert not np.array_equal(
        init_params(NeuralConfig(seed=1), 3, 7)["start_w"],
        init_params(NeuralConfig(seed=0), 3, 7)["start_w"],
    )


def test_training_learns_and_keeps_the_best_epoch(model: NeuralModel) -> None:
    history = model.history
    assert len(history) == TINY.max_epochs
    assert history[-1]["train_mae"] < history[0]["train_mae"]
    best = min(history, key=lambda h: h["val_mae"])
    assert model.best_epoch == best["epoch"]
    assert set(model.cv_mae) == set(HORIZONS)
    assert np.mean(list(model.cv_mae.values())) == pytest.approx(best["val_mae"])


@SETTINGS
@given(
    truth=hnp.arrays(
        np.float32,
        (4, len(HORIZONS), 6),
        elements=st.one_of(
            st.just(np.float32("nan")), st.just(np.float32(0)), st.floats(1, 80, width=32)
        ),
    ),
    forecast=hnp.arrays(np.float32, (4, len(HORIZONS), 6), elements=st.floats(0, 100, width=32)),
    noise=hnp.arrays(np.float32, (4, len(HORIZONS), 6), elements=st.floats(-50, 50, width=32)),
)
def test_masked_loss_ignores_missing_targets(
    truth: np.ndarray, forecast: np.ndarray, noise: np.ndarray
) -> None:
    import jax

    valid = ~np.isnan(truth) & (truth != 0.0)
    expected = np.abs(forecast - truth)[valid].mean() if valid.any() else 0.0
    loss = float(masked_mae_loss(forecast, truth))
    assert loss == pytest.approx(expected, rel=1e-5, abs=1e-5)
    # forecasts where the truth is missing change neither the loss nor get a gradient
    moved = np.where(valid, forecast, forecast + noise)
    assert float(masked_mae_loss(moved, truth)) == pytest.approx(loss, rel=1e-6, abs=1e-6)
    grad = np.asarray(jax.grad(masked_mae_loss)(forecast, truth))
    assert np.isfinite(grad).all()
    assert (grad[~valid] == 0).all()


def test_onnx_matches_the_network(
    data: tuple[pd.DataFrame, np.ndarray, list[str]], model: NeuralModel
) -> None:
    speeds, _, ids = data
    samples = make_samples(speeds, ids)
    assert np.isnan(samples.speeds).any()  # missing readings are part of the comparison
    native = model.predict(samples.speeds, samples.clock)
    assert native.shape == (len(samples.stamps), len(HORIZONS), len(ids))
    assert np.isfinite(native).all()
    from traffic_core.model_bundle import inference_session

    session = inference_session(
        to_onnx(model.params, model.statics(), len(ids)).SerializeToString()
    )
    exported = session.run(None, {"speeds": samples.speeds, "clock": samples.clock})[0]
    assert exported.shape == native.shape
    assert np.abs(exported - native).max() <= 1e-3


def test_published_bundle_runs_on_onnxruntime_and_live_equals_batch(
    tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray, list[str]], model: NeuralModel
) -> None:
    speeds, _, ids = data
    registry = ModelRegistry(tmp_path)
    version = registry.publish(neural_builder(model, speeds, ["2012-03-01"]), code_version="test")
    bundle = NeuralBundle.load(registry, version)
    assert bundle.manifest["lake_partitions"] == ["2012-03-01"]
    assert set(bundle.manifest["metrics"]) == {str(m) for m in HORIZONS}
    samples = make_samples(speeds, ids)
    batch = bundle.predict(samples.speeds, samples.clock)
    np.testing.assert_allclose(batch, model.predict(samples.speeds, samples.clock), atol=1e-3)
    for row in (LOOKBACK - 1, 110, 405, len(samples.stamps) - 1):
        live = bundle.forecast(speeds, samples.stamps[row])
        assert list(live.index) == ids and list(live.columns) == list(HORIZONS)
        np.testing.assert_allclose(live.to_numpy().T, batch[row], rtol=0, atol=1e-5)


def test_the_evaluation_cli_scores_a_neural_version_like_the_others(
    tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray, list[str]], model: NeuralModel
) -> None:
    speeds, _, ids = data
    registry = ModelRegistry(tmp_path / "neural")
    version = registry.publish(neural_builder(model, speeds), code_version="test")
    csv = tmp_path / "two-days.csv"
    speeds.to_csv(csv, index_label="timestamp")
    out = tmp_path / "evaluation.json"
    argv = ["--data", str(csv), "--test-from", "2012-03-02 12:00", "--json", str(out)]
    assert evaluate([*argv, "--registry", str(registry.root)]) == 0
    report = json.loads(out.read_text())
    assert report["model_version"] == version
    evaluation = report["evaluations"]["test_from"]
    assert evaluation["intervals"] == {}  # the family publishes no intervals

    # Independently: the whole file in one batch through the bundle, scored by the metrics.
    loaded = load_speed_csv(csv)
    samples = make_samples(loaded, ids)
    batch = NeuralBundle.load(registry, version).predict(samples.speeds, samples.clock)
    forecasts = {minutes: batch[:, i, :].ravel() for i, minutes in enumerate(HORIZONS)}
    first_target = pd.Timestamp("2012-03-02 12:00")
    scored_from = {h: first_target - steps * WINDOW for h, steps in HORIZONS.items()}
    assert_scores_match(evaluation, expected_scores(loaded, ids, forecasts, scored_from))


def test_altered_bundle_is_refused(
    tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray, list[str]], model: NeuralModel
) -> None:
    speeds, _, _ = data
    registry = ModelRegistry(tmp_path)
    version = registry.publish(neural_builder(model, speeds), code_version="test")
    path = registry.path(version) / NEURAL_ONNX
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match="sha256"):
        NeuralBundle.load(registry, version)


@SETTINGS
@given(
    samples=st.integers(0, 3),
    steps=st.integers(LOOKBACK - 2, LOOKBACK + 1),
    sensors=st.integers(3, 5),
    clock_width=st.integers(len(CLOCK_NAMES) - 1, len(CLOCK_NAMES) + 1),
    bad=st.sampled_from([None, np.inf, -np.inf]),
)
def test_inputs_of_the_wrong_shape_or_infinite_are_refused(
    samples: int, steps: int, sensors: int, clock_width: int, bad: float | None
) -> None:
    speeds = np.full((samples, steps, sensors), 50.0)
    if samples and bad is not None:
        speeds[0, 0, 0] = bad
    clock = np.zeros((samples, clock_width))
    fits = steps == LOOKBACK and sensors == 4 and clock_width == len(CLOCK_NAMES)
    if fits and (bad is None or samples == 0):
        out_speeds, out_clock = check_inputs(speeds, clock, 4)
        assert out_speeds.dtype == out_clock.dtype == np.float32
    else:
        with pytest.raises(ValueError):
            check_inputs(speeds, clock, 4)


@SETTINGS
@given(
    values=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 30), st.just(3)),
        elements=st.one_of(st.just(np.nan), st.just(0.0), st.floats(1, 80)),
    )
)
def test_samples_hold_the_hour_before_and_the_speeds_ahead(values: np.ndarray) -> None:
    stamps = pd.date_range("2012-03-01", periods=len(values), freq="5min")
    speeds = pd.DataFrame(values, index=stamps, columns=["a", "b", "c"])
    samples = make_samples(speeds, ["c", "a", "b"])
    grid = np.where(values == 0.0, np.nan, values)[:, [2, 0, 1]]
    assert samples.speeds.shape == (len(values), LOOKBACK, 3)
    for t in range(len(values)):
        hour = [grid[k] if k >= 0 else np.full(3, np.nan) for k in range(t - LOOKBACK + 1, t + 1)]
        np.testing.assert_array_equal(samples.speeds[t], np.asarray(hour, "float32"))
        for i, steps in enumerate(HORIZONS.values()):
            ahead = grid[t + steps] if t + steps < len(values) else np.full(3, np.nan)
            np.testing.assert_array_equal(samples.targets[t, i], ahead.astype("float32"))


def test_importing_the_family_or_its_bundle_does_not_import_jax() -> None:
    code = (
        "import sys, traffic_core.models.neural, traffic_core.neural_bundle;"
        "sys.exit('jax' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
