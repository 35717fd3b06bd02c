"""What the simulator learns from the real files: the real average week shapes simulated days
(calibration only: per PROVENANCE.md week_average.npy never becomes a model feature), and the
six real days give noise levels, autocorrelation, day-to-day variation and road correlation."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traffic_core.datasets.graph import SensorGraph, load_metr_la_graph
from traffic_core.datasets.speeds import (
    FREQ,
    DatasetError,
    default_data_dir,
    git_blob_id,
    load_speed_csv,
)
from traffic_core.simulation.network import Network, RoadSmoother

WEEK_AVERAGE = "metr-la/week_average.npy"
SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
STEPS_PER_DAY = 288
WEEK_SLOTS = 7 * STEPS_PER_DAY
WEEK_ORIGIN = pd.Timestamp("2012-03-01 00:00")  # a Thursday: slot 0 of week_average.npy
STEP = pd.Timedelta(FREQ)


@dataclass(frozen=True, eq=False)
class Calibration:
    """What the simulator learnt from the real files."""

    graph: SensorGraph  # real METR-LA graph, order of `week`
    week: np.ndarray  # (207, 2016) real average week, slot 0 = Thursday 00:00
    free_flow: np.ndarray  # per real sensor, 95th percentile of its week
    noise_speeds: np.ndarray  # speed levels (mph) ...
    noise_sigma: np.ndarray  # ... and the robust residual sd at each level
    ar_weight: float  # share of variance in the slow AR(1) component
    ar_phi: tuple[float, float]  # lag-1 coefficients (slow, fast)
    day_sd_common: float  # sd of the log congestion factor shared by a whole day
    day_sd_sensor: float  # sd of its per-sensor part
    spatial_mix: float  # graph smoothing weight matching neighbour correlation
    neighbour_corr: float  # mean residual-innovation correlation of linked sensors
    files: dict[str, str]  # calibration file -> git blob id

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "week_average_use": "simulation calibration only; never a model feature",
            "noise_sigma_by_speed": {
                f"{s:.1f}": round(float(v), 3)
                for s, v in zip(self.noise_speeds, self.noise_sigma, strict=True)
            },
            "ar_weight": self.ar_weight,
            "ar_phi": list(self.ar_phi),
            "day_sd_common": round(self.day_sd_common, 4),
            "day_sd_sensor": round(self.day_sd_sensor, 4),
            "spatial_mix": round(self.spatial_mix, 4),
            "neighbour_corr": self.neighbour_corr,
        }


def calibrate(data_dir: str | Path | None = None) -> Calibration:
    """Estimate simulator parameters from the real week profile and six real days."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return _calibrate(root.resolve())


@lru_cache(maxsize=4)
def _calibrate(root: Path) -> Calibration:
    for name in (WEEK_AVERAGE, SIX_DAYS):
        if not (root / name).is_file():
            raise DatasetError(
                f"simulator calibration file not found: {root / name} "
                "(pass data_dir or set TRAFFIC_DATA_DIR)"
            )
    graph = load_metr_la_graph(root)
    week = np.load(root / WEEK_AVERAGE).astype(np.float64)
    if week.shape != (len(graph), WEEK_SLOTS):
        raise DatasetError(f"{WEEK_AVERAGE}: shape {week.shape}, expected ({len(graph)}, 2016)")
    real = load_speed_csv(root / SIX_DAYS)
    if list(real.columns) != graph.sensor_ids or real.isna().any().any():
        raise DatasetError(f"{SIX_DAYS}: expected gap-free speeds for the METR-LA sensors")
    n_days = len(real) // STEPS_PER_DAY
    obs = real.to_numpy(np.float64)[: n_days * STEPS_PER_DAY]  # (T, N)
    free_flow = np.percentile(week, 95, axis=1)
    depth = (free_flow[:, None] - week)[:, week_slots(real.index[0], len(obs))].T  # (T, N)

    # Day-level congestion factor: least squares of the observed deficit on the usual one.
    deficit = (free_flow - obs).reshape(n_days, STEPS_PER_DAY, -1)
    usual = depth.reshape(n_days, STEPS_PER_DAY, -1)
    factor = (deficit * usual).sum(1) / np.maximum((usual * usual).sum(1), 1e-6)
    log_f = np.log(np.clip(factor, 0.2, 5.0))  # (days, N)
    common = np.median(log_f, axis=1)
    day_sd_sensor = _robust_sd(log_f - common[:, None])

    base = free_flow - np.repeat(np.exp(log_f), STEPS_PER_DAY, axis=0) * depth
    resid = obs - base
    edges = np.array([0, 30, 45, 55, 60, 65, 71])
    bins = np.digitize(base, edges[1:-1])
    noise_speeds = np.array([np.median(base[bins == b]) for b in range(len(edges) - 1)])
    noise_sigma = np.array([_robust_sd(resid[bins == b]) for b in range(len(edges) - 1)])

    z = resid / np.interp(base, noise_speeds, noise_sigma)
    z -= z.mean(axis=0)
    acf = np.array([np.median((z[k:] * z[:-k]).sum(0) / (z * z).sum(0)) for k in range(1, 25)])
    ar_weight, phi_slow, phi_fast = _fit_two_ar(acf)
    innovations = z[1:] - acf[0] * z[:-1]
    src, dst, _ = graph.edges()
    neighbour_corr = float(np.corrcoef(innovations.T)[src, dst].mean())

    return Calibration(
        graph=graph,
        week=week.astype(np.float32),
        free_flow=free_flow.astype(np.float32),
        noise_speeds=noise_speeds,
        noise_sigma=noise_sigma,
        ar_weight=ar_weight,
        ar_phi=(phi_slow, phi_fast),
        day_sd_common=float(np.std(common, ddof=1)),
        day_sd_sensor=day_sd_sensor,
        spatial_mix=_fit_spatial_mix(graph, neighbour_corr),
        neighbour_corr=round(neighbour_corr, 4),
        files={name: git_blob_id(root / name) for name in (WEEK_AVERAGE, SIX_DAYS)},
    )


def _robust_sd(x: np.ndarray) -> float:
    """MAD-based sd: incidents in the real days must not inflate the everyday noise."""
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def week_slots(start: pd.Timestamp, steps: int) -> np.ndarray:
    slot0 = ((pd.Timestamp(start) - WEEK_ORIGIN) // STEP) % WEEK_SLOTS
    return (slot0 + np.arange(steps)) % WEEK_SLOTS


def _fit_two_ar(acf: np.ndarray) -> tuple[float, float, float]:
    """Real residuals decorrelate slower than one AR(1) allows (lag 12 still ~0.14), so fit a
    slow + fast AR(1) mixture to the autocorrelation function by grid search."""
    lags = np.arange(1, len(acf) + 1)
    w = np.linspace(0, 1, 21)[:, None, None, None]
    slow = np.linspace(0.80, 0.99, 20)[None, :, None, None]
    fast = np.linspace(0.0, 0.80, 17)[None, None, :, None]
    err = ((w * slow**lags + (1 - w) * fast**lags - acf) ** 2).sum(-1)
    i, j, k = np.unravel_index(np.argmin(err), err.shape)
    return (
        round(float(w.ravel()[i]), 4),
        round(float(slow.ravel()[j]), 4),
        round(float(fast.ravel()[k]), 4),
    )


def _fit_spatial_mix(graph: SensorGraph, target: float) -> float:
    """Smoothing weight whose implied neighbour correlation is closest to the real one."""
    net = Network.of(graph)
    grid = np.linspace(0, 0.9, 19)
    corr = []
    for mix in grid:
        m = RoadSmoother(net, float(mix))(np.eye(len(net)))  # row i: response to unit noise at i
        cov = m.T @ m
        sd = np.sqrt(np.diag(cov))
        corr.append((cov / sd[:, None] / sd[None, :])[net.src, net.dst].mean())
    return float(grid[np.argmin(np.abs(np.array(corr) - target))])
