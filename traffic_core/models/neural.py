"""A compact Graph WaveNet-style family: every sensor's 15/30/60-minute forecast at once.

Inputs are what the feature function sees: the last hour of all sensors (LOOKBACK 5-minute
speeds, NaN = missing) and the clock of the moment (`features.clock_features`); the road graph
enters as two diffusion supports (traffic flowing downstream and the backward direction,
row-normalized from `adj_mx.pkl`), beside an adaptive adjacency learned from node embeddings.
Gated dilated temporal convolutions (kernel 2, dilations summing to the hour) shrink the hour
to one step; each layer then diffuses over the graph. The network forecasts the change from
the latest reading in standardized units, so it starts from persistence.

JAX on CPU: PyPI's jaxlib is CPU-only and ~0.1 GB, where PyPI's torch is the CUDA build.
JAX is imported inside the functions that train or run the network, so importing this module
(and everything that imports it) costs nothing. Training is seeded and deterministic: fixed
initialization and batch order, and XLA's CPU backend on one intra-op thread (set before JAX
starts; a process that already started JAX keeps its own setting). The loss is masked MAE
(missing or 0 mph ground truth ignored); the epoch kept is the one with the lowest masked MAE
on the last forward-chaining CV fold, whose training rows end `gap_steps` before it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from traffic_core.cv import forward_chaining_splits
from traffic_core.features import CLOCK_NAMES, HORIZONS, LOOKBACK, clock_features, on_grid

Params = dict[str, np.ndarray]
T = TypeVar("T")
S = TypeVar("S")
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@dataclass(frozen=True)
class NeuralConfig:
    """Sizes and training settings; the defaults train on six days in minutes on 2 cores."""

    residual_channels: int = 16
    dilation_channels: int = 16
    skip_channels: int = 32
    end_channels: int = 64
    dilations: tuple[int, ...] = (4, 4, 2, 1)
    """Kernel-2 dilated convolutions: 1 + sum(dilations) must equal LOOKBACK, so the hour
    shrinks to exactly one step. Large dilations first keep the graph steps short."""
    adaptive_rank: int = 8
    diffusion_steps: int = 2
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    clip_norm: float = 5.0
    max_epochs: int = 60
    patience: int = 10
    cv_splits: int = 5
    gap_steps: int = max(HORIZONS.values())
    seed: int = 0

    def __post_init__(self) -> None:
        if 1 + sum(self.dilations) != LOOKBACK:
            raise ValueError(f"1 + sum(dilations) must be {LOOKBACK}, got {self.dilations}")


@dataclass(eq=False)
class NeuralModel:
    """Trained weights plus what the graph needs to run them (supports, standardization)."""

    config: NeuralConfig
    sensor_ids: list[str]
    params: Params
    supports: list[np.ndarray]
    mean: float
    std: float
    best_epoch: int
    cv_mae: dict[int, float]
    history: list[dict[str, float]] = field(repr=False)
    train_seconds: float

    def predict(self, speeds: np.ndarray, clock: np.ndarray) -> np.ndarray:
        """(samples, len(HORIZONS), sensors) mph, float64, from speeds (samples, LOOKBACK,
        sensors) with NaN for missing and clock (samples, len(CLOCK_NAMES))."""
        speeds, clock = check_inputs(speeds, clock, len(self.sensor_ids))
        return _predict(_jitted_forward(self.statics()), self.params, speeds, clock)

    def statics(self) -> dict[str, Any]:
        return statics_of(self.config, self.supports, self.mean, self.std)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for manifests and benchmarks."""
        return {
            "family": "graph_wavenet",
            "config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()
            },
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "cv_mae": {str(k): v for k, v in self.cv_mae.items()},
            "train_seconds": round(self.train_seconds, 1),
        }


def check_inputs(speeds: Any, clock: Any, sensors: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 arrays of the shapes the network takes; raises ValueError otherwise. Speeds may
    be NaN (missing) but not infinite; the clock must be finite."""
    speeds = np.ascontiguousarray(speeds, dtype="float32")
    clock = np.ascontiguousarray(clock, dtype="float32")
    if speeds.ndim != 3 or speeds.shape[1:] != (LOOKBACK, sensors):
        raise ValueError(f"speeds must be (samples, {LOOKBACK}, {sensors}), got {speeds.shape}")
    if clock.shape != (len(speeds), len(CLOCK_NAMES)):
        raise ValueError(f"clock must be ({len(speeds)}, {len(CLOCK_NAMES)}), got {clock.shape}")
    if np.isinf(speeds).any() or not np.isfinite(clock).all():
        raise ValueError("speeds may be NaN but not infinite, and the clock must be finite")
    return speeds, clock


def diffusion_supports(adjacency: np.ndarray) -> list[np.ndarray]:
    """[downstream, backward] transition matrices, out[n] = sum_m S[n, m] x[m]. adjacency[i, j]
    > 0 means i is upstream of j: the first lets j hear from i, the second i from j. Rows
    without links stay zero."""
    weights = np.asarray(adjacency, dtype="float64")

    def row_normalized(matrix: np.ndarray) -> np.ndarray:
        totals = matrix.sum(axis=1, keepdims=True)
        return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)

    return [row_normalized(weights.T).astype("float32"), row_normalized(weights).astype("float32")]


@dataclass(frozen=True)
class Samples:
    """One sample per moment: the hour up to it, its clock, and the speeds HORIZONS ahead."""

    stamps: pd.DatetimeIndex
    speeds: np.ndarray  # (samples, LOOKBACK, sensors)
    clock: np.ndarray  # (samples, len(CLOCK_NAMES))
    targets: np.ndarray  # (samples, len(HORIZONS), sensors), NaN where missing or beyond

    def take(self, rows: np.ndarray) -> Samples:
        return Samples(self.stamps[rows], self.speeds[rows], self.clock[rows], self.targets[rows])


def make_samples(speeds: pd.DataFrame, sensor_ids: list[str]) -> Samples:
    """Every 5-minute moment of `speeds` (wide, mph, 0 or NaN = missing) as a sample. Hours
    reaching before the data are padded with missing readings; targets beyond it are NaN, so
    a window's last moments still train their shorter horizons."""
    grid = on_grid(speeds, sensor_ids)
    values = grid.to_numpy(dtype="float32")
    padded = np.vstack([np.full((LOOKBACK - 1, values.shape[1]), np.nan, "float32"), values])
    hours = np.lib.stride_tricks.sliding_window_view(padded, LOOKBACK, axis=0)
    ahead = np.vstack([values, np.full((max(HORIZONS.values()), values.shape[1]), np.nan)])
    targets = np.stack([ahead[s : s + len(values)] for s in HORIZONS.values()], axis=1)
    stamps = pd.DatetimeIndex(grid.index)
    return Samples(
        stamps=stamps,
        speeds=np.ascontiguousarray(hours.transpose(0, 2, 1)),
        clock=clock_features(stamps).astype("float32"),
        targets=targets.astype("float32"),
    )


def _jax() -> Any:
    """JAX, on one deterministic CPU thread unless the process started it otherwise."""
    if "jax" not in __import__("sys").modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {XLA_FLAGS}".strip()
    import jax

    return jax


def forward(params: Mapping[str, Any], statics: Mapping[str, Any], speeds: Any, clock: Any) -> Any:
    """The network in jax.numpy: (B, LOOKBACK, N) mph + (B, clock) -> (B, len(HORIZONS), N)
    mph. Layout inside is (batch, channels, sensors, time), ONNX's NCHW with H = sensors."""
    jax = _jax()
    jnp = jax.numpy
    mean, std = statics["mean"], statics["std"]
    present = ~jnp.isnan(speeds)
    x = jnp.where(present, (speeds - mean) / std, 0.0).transpose(0, 2, 1)  # (B, N, T)
    b, n, t = x.shape
    clock_planes = jnp.broadcast_to(clock[:, :, None, None], (b, clock.shape[1], n, t))
    h = jnp.concatenate(
        [x[:, None], present.transpose(0, 2, 1)[:, None].astype(x.dtype), clock_planes], axis=1
    )
    h = _pointwise(params, "start", h)
    adaptive = jax.nn.softmax(jax.nn.relu(params["node_a"] @ params["node_b"]), axis=1)
    supports = [*statics["supports"], adaptive]
    skip = 0.0
    for layer, dilation in enumerate(statics["dilations"]):
        gated = jnp.tanh(_dilated(params, f"filter{layer}", h, dilation)) * jax.nn.sigmoid(
            _dilated(params, f"gate{layer}", h, dilation)
        )
        skip = skip + _pointwise(params, f"skip{layer}", gated[..., -1:])
        parts = diffusion_parts(
            gated, supports, statics["diffusion_steps"], partial(jnp.einsum, "nm,bcmt->bcnt")
        )
        mixed = _pointwise(params, f"mix{layer}", jnp.concatenate(parts, axis=1))
        h = mixed + h[..., -gated.shape[-1] :]
    out = jax.nn.relu(_pointwise(params, "end1", jax.nn.relu(skip)))
    change = _pointwise(params, "end2", out)[..., 0]  # (B, horizons, N)
    return (change + x[:, None, :, -1]) * std + mean


def diffusion_parts(x: T, supports: Sequence[S], steps: int, apply: Callable[[S, T], T]) -> list[T]:
    """[x, then `steps` diffusion steps over each support in turn]: the channel order the mix
    layer's weights expect, shared by the network and its ONNX graph."""
    parts = [x]
    for support in supports:
        step = x
        for _ in range(steps):
            step = apply(support, step)
            parts.append(step)
    return parts


def statics_of(
    config: NeuralConfig, supports: list[np.ndarray], mean: float, std: float
) -> dict[str, Any]:
    """What the network runs with besides its weights; compiled in as constants."""
    return {
        "supports": [np.asarray(s, "float32") for s in supports],
        "mean": float(mean),
        "std": float(std),
        "dilations": tuple(config.dilations),
        "diffusion_steps": config.diffusion_steps,
    }


def _jitted_forward(statics: Mapping[str, Any]) -> Callable[..., Any]:
    jax = _jax()
    return jax.jit(lambda params, speeds, clock: forward(params, statics, speeds, clock))


def _predict(
    run: Callable[..., Any], params: Params, speeds: np.ndarray, clock: np.ndarray, batch: int = 64
) -> np.ndarray:
    """Forecasts in fixed-size batches (the last one padded), so one compilation serves all."""
    outputs = []
    for start in range(0, len(speeds), batch):
        part = slice(start, start + batch)
        rows = len(speeds[part])
        pad = batch - rows
        s = np.concatenate([speeds[part], np.repeat(speeds[part][-1:], pad, axis=0)])
        c = np.concatenate([clock[part], np.repeat(clock[part][-1:], pad, axis=0)])
        outputs.append(np.asarray(run(params, s, c))[:rows])
    if not outputs:
        return np.zeros((0, len(HORIZONS), speeds.shape[2]))
    return np.concatenate(outputs).astype("float64")


def init_params(config: NeuralConfig, sensors: int, in_channels: int) -> Params:
    """Glorot-uniform weights, zero biases, from config.seed (numpy, so no JAX is needed)."""
    rng = np.random.default_rng(config.seed)
    r, d, k = config.residual_channels, config.dilation_channels, config.skip_channels
    hops = 1 + 3 * config.diffusion_steps  # itself, then each step over each of three supports

    def dense(out: int, inp: int, *kernel: int) -> np.ndarray:
        fan_in, fan_out = inp * int(np.prod(kernel or (1,))), out * int(np.prod(kernel or (1,)))
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (out, inp, *kernel)).astype("float32")

    params: Params = {}

    def add(name: str, weight: np.ndarray) -> None:
        params[f"{name}_w"] = weight
        params[f"{name}_b"] = np.zeros(weight.shape[0], "float32")

    add("start", dense(r, in_channels))
    for layer in range(len(config.dilations)):
        add(f"filter{layer}", dense(d, r, 1, 2))
        add(f"gate{layer}", dense(d, r, 1, 2))
        add(f"skip{layer}", dense(k, d))
        add(f"mix{layer}", dense(r, d * hops))
    add("end1", dense(config.end_channels, k))
    add("end2", dense(len(HORIZONS), config.end_channels) * 0.1)  # start near persistence
    params["node_a"] = rng.normal(0, 0.1, (sensors, config.adaptive_rank)).astype("float32")
    params["node_b"] = rng.normal(0, 0.1, (config.adaptive_rank, sensors)).astype("float32")
    return params


def masked_mae_loss(forecast: Any, targets: Any) -> Any:
    """Mean absolute error over valid targets only (not NaN, not 0 mph, METR-LA's missing);
    zero when a batch has none."""
    jnp = _jax().numpy
    valid = ~jnp.isnan(targets) & (targets != 0.0)
    errors = jnp.where(valid, jnp.abs(forecast - jnp.where(valid, targets, 0.0)), 0.0)
    return errors.sum() / jnp.maximum(valid.sum(), 1)


def per_horizon_mae(forecast: np.ndarray, targets: np.ndarray) -> dict[int, float]:
    """Masked MAE per horizon (minutes) over (samples, horizons, sensors) arrays."""
    out = {}
    for i, minutes in enumerate(HORIZONS):
        truth, pred = targets[:, i].ravel(), forecast[:, i].ravel()
        valid = ~np.isnan(truth) & (truth != 0.0)
        out[minutes] = float(np.abs(pred[valid] - truth[valid]).mean()) if valid.any() else np.nan
    return out


def train_neural(
    speeds: pd.DataFrame,
    adjacency: np.ndarray,
    sensor_ids: list[str],
    config: NeuralConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> NeuralModel:
    """Fit on the training window `speeds` (wide, mph) only. The last forward-chaining fold of
    its moments validates each epoch; the weights of the best epoch are kept, and training
    stops after `patience` epochs without improvement."""
    jax = _jax()
    import optax

    config = config or NeuralConfig()
    started = time.perf_counter()
    samples = make_samples(speeds, sensor_ids)
    train_rows, val_rows = forward_chaining_splits(
        samples.stamps, config.cv_splits, config.gap_steps
    )[-1]
    has_target = ~np.all(np.isnan(samples.targets), axis=(1, 2))
    train, val = samples.take(train_rows[has_target[train_rows]]), samples.take(val_rows)
    if len(train.stamps) < config.batch_size:
        raise ValueError("fewer training moments than one batch")
    observed = train.speeds[~np.isnan(train.speeds)]
    mean, std = float(observed.mean()), float(observed.std()) or 1.0
    supports = diffusion_supports(adjacency)
    statics = statics_of(config, supports, mean, std)
    params = init_params(config, len(sensor_ids), 2 + len(CLOCK_NAMES))
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(config.learning_rate, weight_decay=config.weight_decay),
    )
    state = optimizer.init(params)

    def loss_fn(p: Params, s: Any, c: Any, y: Any) -> Any:
        return masked_mae_loss(forward(p, statics, s, c), y)

    @jax.jit
    def step(p: Params, st: Any, s: Any, c: Any, y: Any) -> tuple[Params, Any, Any]:
        loss, grads = jax.value_and_grad(loss_fn)(p, s, c, y)
        updates, st = optimizer.update(grads, st, p)
        return optax.apply_updates(p, updates), st, loss

    run = _jitted_forward(statics)
    order_rng = np.random.default_rng(config.seed)
    batches = len(train.stamps) // config.batch_size
    best: tuple[float, int, Params] | None = None
    history: list[dict[str, float]] = []
    for epoch in range(config.max_epochs):
        order = order_rng.permutation(len(train.stamps))[: batches * config.batch_size]
        losses = []
        for rows in order.reshape(batches, config.batch_size):
            rows = np.sort(rows)
            params, state, loss = step(
                params, state, train.speeds[rows], train.clock[rows], train.targets[rows]
            )
            losses.append(float(loss))
        val_forecast = _predict(run, params, val.speeds, val.clock)
        by_horizon = per_horizon_mae(val_forecast, val.targets)
        val_mae = float(np.nanmean(list(by_horizon.values())))
        history.append({"epoch": epoch, "train_mae": float(np.mean(losses)), "val_mae": val_mae})
        if log is not None:
            log(f"epoch {epoch}: train {np.mean(losses):.4f} val {val_mae:.4f}")
        if best is None or val_mae < best[0]:
            best = (val_mae, epoch, jax.tree.map(np.asarray, params))
            best_by_horizon = by_horizon
        elif epoch - best[1] >= config.patience:
            break
    assert best is not None
    return NeuralModel(
        config=config,
        sensor_ids=[str(s) for s in sensor_ids],
        params={k: np.asarray(v) for k, v in best[2].items()},
        supports=supports,
        mean=mean,
        std=std,
        best_epoch=best[1],
        cv_mae=best_by_horizon,
        history=history,
        train_seconds=time.perf_counter() - started,
    )


def _pointwise(params: Mapping[str, Any], name: str, h: Any) -> Any:
    jnp = _jax().numpy
    return jnp.einsum("oc,bcnt->bont", params[f"{name}_w"], h) + params[f"{name}_b"][:, None, None]


def _dilated(params: Mapping[str, Any], name: str, h: Any, dilation: int) -> Any:
    lax = _jax().lax
    out = lax.conv_general_dilated(
        h,
        params[f"{name}_w"],
        window_strides=(1, 1),
        padding="VALID",
        rhs_dilation=(1, dilation),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return out + params[f"{name}_b"][:, None, None]
