"""Synthetic METR-LA-shaped speeds for any span and sensor count, calibrated on real data.

Why: the real speeds available here cover six days, far too little to exercise streaming,
retraining and serving over weeks or years. The simulator reproduces what matters to
those parts - per-sensor weekly profiles, day-to-day variation, noise correlated in time
and along roads, incidents whose queues spread upstream, and METR-LA's outages (zeros) -
and labels every output as synthetic so it can never pass for real data.

Calibration (see `calibrate`) uses the real average week only to shape simulated days;
per PROVENANCE.md week_average.npy must never become a model feature.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traffic_core.datasets.graph import SensorGraph, load_metr_la_graph
from traffic_core.datasets.speeds import (
    FREQ,
    DatasetError,
    default_data_dir,
    finalise_speeds,
    git_blob_id,
    load_speed_csv,
    parquet_metadata,
    save_parquet,
)

GENERATOR = "traffic_core.simulator/1"
WEEK_AVERAGE = "metr-la/week_average.npy"
SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
STEPS_PER_DAY = 288
WEEK_SLOTS = 7 * STEPS_PER_DAY
WEEK_ORIGIN = pd.Timestamp("2012-03-01 00:00")  # a Thursday: slot 0 of week_average.npy
MIN_SPEED, MAX_SPEED = 1.0, 70.0  # METR-LA's observed range
STEP = pd.Timedelta(FREQ)
INCIDENT_COLUMNS = [
    "incident_id",
    "sensor_id",
    "start",
    "end",
    "severity",
    "affected_sensors",
    "source",
]

# Independent random streams, so e.g. switching incidents off leaves everything else equal.
_GRAPH, _PROFILES, _INIT, _OUTAGES, _GAPS, _INCIDENTS, _DAY = range(7)

# Incident dynamics (steps of 5 minutes).
_RAMP_STEPS, _RECOVERY_TAU, _RECOVERY_TAIL = 2.0, 3.0, 15
_UPSTREAM_DECAY, _UPSTREAM_FANOUT = 0.75, 2


# --------------------------------------------------------------------------- calibration


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
    depth = (free_flow[:, None] - week)[:, _slots(real.index[0], len(obs))].T  # (T, N)

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


def _slots(start: pd.Timestamp, steps: int) -> np.ndarray:
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
    net = _Network.of(graph)
    grid = np.linspace(0, 0.9, 19)
    corr = []
    for mix in grid:
        m = _Smoother(net, float(mix))(np.eye(len(net)))  # row i: response to unit noise at i
        cov = m.T @ m
        sd = np.sqrt(np.diag(cov))
        corr.append((cov / sd[:, None] / sd[None, :])[net.src, net.dst].mean())
    return float(grid[np.argmin(np.abs(np.array(corr) - target))])


# --------------------------------------------------------------------------- graphs


@dataclass(frozen=True, eq=False)
class _Network:
    """A road graph as directed links (src upstream of dst), no self-loops. The simulator
    works on this so 10,000 sensors never need a dense 10,000 x 10,000 adjacency."""

    sensor_ids: list[str]
    locations: pd.DataFrame
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray

    @classmethod
    def of(cls, graph: SensorGraph) -> _Network:
        return cls(graph.sensor_ids, graph.locations, *graph.edges())

    def __len__(self) -> int:
        return len(self.sensor_ids)

    def to_graph(self) -> SensorGraph:
        n = len(self)
        adjacency = np.zeros((n, n), dtype=np.float32)
        np.fill_diagonal(adjacency, 1.0)
        adjacency[self.src, self.dst] = self.weight
        return SensorGraph(self.sensor_ids, self.locations, adjacency)


def synthetic_graph(n: int, seed: int = 0) -> SensorGraph:
    """Freeway-like directed corridors of 15-60 sensors joined at interchanges, placed in
    the Los Angeles area, for sensor counts without a real graph. Weights follow DCRNN:
    exp(-(d / 1.5 km)^2), links below 0.1 dropped, self-loops 1. Dense: 400 MB at n=10,000."""
    return _synthetic_network(n, seed).to_graph()


def _synthetic_network(n: int, seed: int) -> _Network:
    if n < 1:
        raise ValueError("a synthetic graph needs n >= 1")
    rng = np.random.default_rng([seed, _GRAPH])
    lengths: list[int] = []
    while sum(lengths) < n:
        lengths.append(int(rng.integers(15, 61)))
    lengths[-1] -= sum(lengths) - n
    spacing = rng.uniform(0.4, 2.0, n)  # km to the previous sensor
    lat, lon = np.empty(n), np.empty(n)
    src, dst, dist = [], [], []
    first = 0
    for length in lengths:
        c = np.arange(first, first + length)
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, length))
        lat[c] = rng.uniform(33.75, 34.35) + np.cumsum(spacing[c] * np.cos(heading)) / 111.0
        lon[c] = rng.uniform(-118.65, -117.95) + np.cumsum(spacing[c] * np.sin(heading)) / 92.0
        src += [c[:-1], c[:-2]]
        dst += [c[1:], c[2:]]
        dist += [spacing[c[1:]], spacing[c[1:-1]] + spacing[c[2:]]]
        if first:  # on-ramp from and off-ramp to earlier corridors
            src.append(np.array([rng.integers(first), c[-1]]))
            dst.append(np.array([c[0], rng.integers(first)]))
            dist.append(rng.uniform(0.5, 1.5, 2))
        first += length
    weight = np.exp(-((np.concatenate(dist) / 1.5) ** 2)).astype(np.float32)
    keep = weight >= 0.1
    width = max(5, len(str(n - 1)))
    ids = [f"syn{i:0{width}d}" for i in range(n)]
    locations = pd.DataFrame({"sensor_id": ids, "latitude": lat, "longitude": lon})
    locations.attrs = {"synthetic": True, "source": "synthetic"}
    return _Network(
        ids, locations, np.concatenate(src)[keep], np.concatenate(dst)[keep], weight[keep]
    )


def _real_subset(graph: SensorGraph, n: int) -> SensorGraph:
    """n connected real sensors (breadth-first over links), kept in METR-LA order."""
    src, dst, _ = graph.edges()
    links: list[set[int]] = [set() for _ in range(len(graph))]
    for a, b in zip(src.tolist(), dst.tolist(), strict=True):
        links[a].add(b)
        links[b].add(a)
    chosen: list[int] = []
    seen: set[int] = set()
    for root in range(len(graph)):
        if root in seen:
            continue
        seen.add(root)
        queue = [root]
        while queue and len(chosen) < n:
            node = queue.pop(0)
            chosen.append(node)
            fresh = sorted(links[node] - seen)
            seen.update(fresh)
            queue += fresh
        if len(chosen) == n:
            break
    return graph.subgraph([graph.sensor_ids[i] for i in sorted(chosen)])


class _Smoother:
    """x -> (1 - mix) x + mix P x over the undirected, row-normalised road graph, rescaled
    to unit variance per sensor: iid noise in, noise correlated along roads out. A sparse
    segment sum, so cost grows with links, not sensors squared."""

    def __init__(self, net: _Network, mix: float) -> None:
        n = len(net)
        key = np.concatenate([net.src * n + net.dst, net.dst * n + net.src])
        both = np.concatenate([net.weight, net.weight]).astype(np.float64)
        order = np.argsort(key, kind="stable")
        key, both = key[order], both[order]
        uniq, first = np.unique(key, return_index=True)
        weight = np.maximum.reduceat(both, first) if key.size else both
        row, self.cols = uniq // n, uniq % n
        weight = weight / np.bincount(row, weights=weight, minlength=n)[row]
        scale = np.sqrt((1 - mix) ** 2 + mix**2 * np.bincount(row, weights=weight**2, minlength=n))
        self.mix, self.scale = mix, scale.astype(np.float32)
        self.rows, self.starts = np.unique(row, return_index=True)
        self.weights = (mix * weight).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Smooth the last axis of a 1-D or 2-D array."""
        out = (1 - self.mix) * x
        if self.cols.size:
            out[..., self.rows] += np.add.reduceat(
                x[..., self.cols] * self.weights, self.starts, axis=-1
            )
        return out / self.scale


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class _Segments:
    """Per-sensor time spans [start, stop) sorted by start (sensor -1 = every sensor), with
    optional per-span values (`extra` rows)."""

    sensor: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    extra: np.ndarray
    longest: int

    @classmethod
    def of(
        cls,
        sensor: np.ndarray,
        start: np.ndarray,
        stop: np.ndarray,
        extra: np.ndarray | None = None,
    ) -> _Segments:
        order = np.argsort(start, kind="stable")
        extra = np.empty((len(start), 0)) if extra is None else extra
        longest = int((stop - start).max()) if start.size else 0
        return cls(sensor[order].astype(np.int64), start[order], stop[order], extra[order], longest)

    def cells(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(segment index, step) of every covered step in [lo, hi)."""
        lo_idx = np.searchsorted(self.start, lo - self.longest)
        idx = np.arange(lo_idx, np.searchsorted(self.start, hi))
        s, e = np.maximum(self.start[idx], lo), np.minimum(self.stop[idx], hi)
        keep = e > s
        idx, s, n = idx[keep], s[keep], (e - s)[keep]
        first = np.cumsum(n) - n
        return np.repeat(idx, n), np.arange(n.sum()) - np.repeat(first - s, n)


def _covered(seg: _Segments, steps: int) -> float:
    mask = np.zeros(steps, bool)
    _, t = seg.cells(0, steps)
    mask[t] = True
    return float(mask.mean())


# --------------------------------------------------------------------------- simulator


@dataclass(eq=False)
class SimulatedDataset:
    """Synthetic speeds (0.0 = missing, as in METR-LA files), incident reports, metadata,
    and the road graph (built on first access: dense, so 400 MB at 10,000 sensors)."""

    speeds: pd.DataFrame
    incidents: pd.DataFrame
    metadata: dict[str, Any]
    _simulator: Simulator = field(repr=False)

    @property
    def graph(self) -> SensorGraph:
        return self._simulator.graph

    def speeds_nan(self) -> pd.DataFrame:
        """Speeds in the loaders' form: missing readings as NaN."""
        return finalise_speeds(self.speeds, source="simulator")


class Simulator:
    """Plans outages and incidents up front, then generates day by day: each day draws
    from its own seeded stream, so chunking never changes the data."""

    def __init__(
        self,
        days: int = 28,
        n_sensors: int = 207,
        *,
        seed: int = 0,
        start: str | pd.Timestamp = "2012-03-01 00:00",
        graph: SensorGraph | None = None,
        missing_rate: float = 0.08,
        network_gap_rate: float = 0.15,
        incident_rate: float = 0.01,
        calibration: Calibration | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        """missing_rate: target share of zero readings; network_gap_rate: whole-network
        gaps per day; incident_rate: incidents per sensor per day. A supplied `graph`
        overrides `n_sensors`; `calibration` defaults to `calibrate(data_dir)`."""
        self.start = pd.Timestamp(start)
        if self.start.tzinfo is not None or self.start != self.start.floor(FREQ):
            raise ValueError(f"start must be a tz-naive 5-minute boundary, got {start}")
        if days < 1 or (graph is None and n_sensors < 1):
            raise ValueError("days and n_sensors must be at least 1")
        if not 0 <= missing_rate < 0.9:
            raise ValueError("missing_rate must be in [0, 0.9)")
        self.days, self.seed = int(days), int(seed)
        self.steps = self.days * STEPS_PER_DAY
        self.calibration = calib = calibration or calibrate(data_dir)
        self._given_graph, self.network, graph_kind = self._choose_network(graph, n_sensors)
        self.n = len(self.network)
        self._smooth = _Smoother(self.network, calib.spatial_mix)
        self._profile_params()
        self._gaps = self._plan_gaps(network_gap_rate)
        self._outages = self._plan_outages(missing_rate, _covered(self._gaps, self.steps))
        self.incidents, self._effects = self._plan_incidents(incident_rate)
        self.attrs = {
            "synthetic": True,
            "source": "synthetic",
            "generator": GENERATOR,
            "seed": self.seed,
        }
        self.metadata: dict[str, Any] = {
            **self.attrs,
            "start": self.start.isoformat(),
            "days": self.days,
            "n_sensors": self.n,
            "graph": graph_kind,
            "profiles": self.profile_source,
            "missing_rate_target": missing_rate,
            "network_gap_rate_per_day": network_gap_rate,
            "incident_rate_per_sensor_day": incident_rate,
            "n_incidents": len(self.incidents),
            "calibration": calib.summary(),
        }
        self.incidents.attrs = dict(self.attrs)

    # ----- set-up

    @cached_property
    def graph(self) -> SensorGraph:
        given = self._given_graph
        return given if given is not None else self.network.to_graph()

    def _choose_network(
        self, graph: SensorGraph | None, n: int
    ) -> tuple[SensorGraph | None, _Network, str]:
        """A supplied graph wins; else the real METR-LA graph (or a connected part of it)
        up to 207 sensors, and a synthetic one beyond."""
        real = self.calibration.graph
        if graph is None and n <= len(real):
            graph = real if n == len(real) else _real_subset(real, n)
            kind = "metr-la" if n == len(real) else "metr-la subset"
        elif graph is None:
            return None, _synthetic_network(n, self.seed), "synthetic"
        else:
            kind = "supplied"
        return graph, _Network.of(graph), kind

    def _profile_params(self) -> None:
        """Real sensors keep their own week; others borrow a real sensor's week, chosen by
        walking downstream through the real graph so road neighbours look alike, then
        shifted by up to 15 minutes and rescaled in level and congestion depth."""
        calib = self.calibration
        real_index = {s: i for i, s in enumerate(calib.graph.sensor_ids)}
        if all(s in real_index for s in self.network.sensor_ids):
            base = np.array([real_index[s] for s in self.network.sensor_ids])
            shift, level, gain = np.zeros(self.n, int), np.ones(self.n), np.ones(self.n)
            self.profile_source = "real"
        else:
            rng = np.random.default_rng([self.seed, _PROFILES])
            base = _walk(calib.graph, self.n, rng)
            shift = rng.integers(-3, 4, self.n)
            level = rng.uniform(0.95, 1.03, self.n)
            gain = np.exp(rng.normal(0, 0.15, self.n))
            self.profile_source = "resampled"
        self._base, self._shift = base, shift
        self._free_flow = (level * calib.free_flow[base]).astype(np.float32)
        self._depth_gain = (level * gain).astype(np.float32)
        self._depth_week = calib.free_flow[:, None] - calib.week  # (207, 2016)

    def _plan_gaps(self, rate: float) -> _Segments:
        """Whole-network gaps (all sensors zero), 5 minutes to 3 hours."""
        rng = np.random.default_rng([self.seed, _GAPS])
        k = rng.poisson(rate * self.days)
        start = rng.integers(0, self.steps, k)
        length = np.clip(np.rint(rng.lognormal(np.log(4), 0.8, k)), 1, 36).astype(np.int64)
        return _Segments.of(np.full(k, -1), start, start + length)

    def _plan_outages(self, target: float, network_share: float) -> _Segments:
        """Single-sensor outages: lognormal lengths (median 30 min, up to 3 days) at
        per-sensor rates that vary a lot (some detectors are far flakier), tuned so that
        gaps plus outages give `target` zeros overall."""
        rng = np.random.default_rng([self.seed, _OUTAGES])
        share = max(0.0, 1 - (1 - target) / max(1 - network_share, 1e-9))
        flakiness = rng.gamma(0.6, 1 / 0.6, self.n)
        per_sensor = np.clip(share * flakiness / flakiness.mean(), 0, 0.9)
        mu, sigma = np.log(6), 1.4
        mean_len = float(np.exp(mu + sigma**2 / 2)) + 0.5
        lead = int(mean_len)  # outages may begin before the span, as in real data
        counts = rng.poisson(-np.log1p(-per_sensor) / mean_len * (self.steps + lead))
        sensor = np.repeat(np.arange(self.n), counts)
        start = rng.integers(-lead, self.steps, sensor.size)
        length = np.clip(np.ceil(rng.lognormal(mu, sigma, sensor.size)), 1, 3 * STEPS_PER_DAY)
        return _Segments.of(sensor, start, start + length.astype(np.int64))

    def _plan_incidents(self, rate: float) -> tuple[pd.DataFrame, _Segments]:
        """Incidents (more by day than by night) slow their sensor by `severity`; the queue
        then backs up the strongest upstream links hop by hop, weaker at each hop, and
        clears after the incident ends with an exponential recovery."""
        rng = np.random.default_rng([self.seed, _INCIDENTS])
        k = rng.poisson(rate * self.n * self.days)
        hour_weight = np.where(
            (np.arange(STEPS_PER_DAY) // 12 >= 6) & (np.arange(STEPS_PER_DAY) // 12 < 20), 1.0, 0.3
        )
        tod = rng.choice(STEPS_PER_DAY, k, p=hour_weight / hour_weight.sum())
        start = rng.integers(0, self.days, k) * STEPS_PER_DAY + tod
        origin = rng.integers(0, self.n, k)
        duration = np.clip(np.rint(rng.lognormal(np.log(9), 0.6, k)), 3, 48).astype(np.int64)
        severity = 0.2 + 0.6 * rng.beta(2, 2.5, k)
        hop_delay = rng.integers(1, 4, k)
        upstream = _upstream_lists(self.network)
        rows: list[dict[str, Any]] = []
        seg_sensor, seg_start, seg_clear, seg_sev = [], [], [], []
        for i in np.argsort(start, kind="stable"):
            affected: list[int] = []
            frontier, seen = [int(origin[i])], {int(origin[i])}
            for hop in range(1 + int(severity[i] * 4)):
                onset = start[i] + hop * hop_delay[i]
                clear = start[i] + duration[i] + hop
                if onset >= clear or not frontier:
                    break
                for s in frontier:
                    affected.append(s)
                    seg_sensor.append(s)
                    seg_start.append(onset)
                    seg_clear.append(clear)
                    seg_sev.append(severity[i] * _UPSTREAM_DECAY**hop)
                nxt = [u for s in frontier for u in upstream[s] if u not in seen]
                seen.update(nxt)
                frontier = list(dict.fromkeys(nxt))
            rows.append(
                {
                    "incident_id": f"SYN-INC-{len(rows) + 1:06d}",
                    "sensor_id": self.network.sensor_ids[origin[i]],
                    "start": self.start + int(start[i]) * STEP,
                    "end": self.start + int(start[i] + duration[i]) * STEP,
                    "severity": round(float(severity[i]), 3),
                    "affected_sensors": [self.network.sensor_ids[s] for s in affected],
                    "source": "synthetic",
                }
            )
        incidents = pd.DataFrame(rows, columns=INCIDENT_COLUMNS)
        clear = np.array(seg_clear, dtype=np.int64)
        segments = _Segments.of(
            np.array(seg_sensor, dtype=np.int64),
            np.array(seg_start, dtype=np.int64),
            clear + _RECOVERY_TAIL,
            extra=np.column_stack([clear, np.array(seg_sev, dtype=np.float64)]),
        )
        return incidents, segments

    # ----- generation

    def iter_chunks(self, chunk_days: int = 7) -> Iterator[pd.DataFrame]:
        """Speeds in chunks of `chunk_days` days (0.0 = missing), attrs marked synthetic."""
        if chunk_days < 1:
            raise ValueError("chunk_days must be at least 1")
        rng = np.random.default_rng([self.seed, _INIT])
        state = rng.standard_normal((2, self.n), dtype=np.float32)
        columns = pd.Index(self.network.sensor_ids, name="sensor_id")
        for first in range(0, self.days, chunk_days):
            last = min(first + chunk_days, self.days)
            values = np.empty(((last - first) * STEPS_PER_DAY, self.n), dtype=np.float32)
            for d in range(first, last):
                row = (d - first) * STEPS_PER_DAY
                values[row : row + STEPS_PER_DAY] = self._day(d, state)
            index = pd.date_range(
                self.start + first * STEPS_PER_DAY * STEP,
                periods=len(values),
                freq=FREQ,
                name="timestamp",
            )
            chunk = pd.DataFrame(values, index=index, columns=columns, copy=False)
            chunk.attrs = dict(self.attrs)
            yield chunk

    def run(self) -> SimulatedDataset:
        speeds = next(self.iter_chunks(chunk_days=self.days))
        return SimulatedDataset(speeds, self.incidents, self.metadata, self)

    def write(self, path: str | Path, chunk_days: int = 7) -> tuple[Path, Path]:
        """Stream speeds to Parquet (synthetic flag and metadata in the key-value metadata)
        and incidents to the sidecar `<stem>.incidents.parquet`."""
        out = save_parquet(self.iter_chunks(chunk_days), path, metadata=self.metadata)
        sidecar = incidents_path(out)
        table = pa.Table.from_pandas(self.incidents, preserve_index=False)
        meta = {**(table.schema.metadata or {}), **parquet_metadata(self.attrs, self.metadata)}
        pq.write_table(table.replace_schema_metadata(meta), sidecar)
        return out, sidecar

    def _day(self, d: int, state: np.ndarray) -> np.ndarray:
        calib = self.calibration
        rng = np.random.default_rng([self.seed, _DAY, d])
        t0 = d * STEPS_PER_DAY
        slots = _slots(self.start + t0 * STEP, STEPS_PER_DAY)
        cols = (slots[None, :] - self._shift[:, None]) % WEEK_SLOTS
        depth = self._depth_week[self._base[:, None], cols].T * self._depth_gain  # (288, N)
        log_f = calib.day_sd_common * rng.standard_normal() + calib.day_sd_sensor * self._smooth(
            rng.standard_normal(self.n)
        )
        base = self._free_flow - np.exp(log_f).astype(np.float32) * depth
        # Smoothing commutes with the per-sensor AR filters, so smooth once at the end.
        eps = rng.standard_normal((2, STEPS_PER_DAY, self.n), dtype=np.float32)
        noise = self._smooth(self._ar(eps, state))
        speed = base + np.interp(base, calib.noise_speeds, calib.noise_sigma) * noise
        speed *= 1 - self._severity(t0)
        np.clip(speed, MIN_SPEED, MAX_SPEED, out=speed)
        speed[self._missing(t0)] = 0.0
        return speed

    def _ar(self, eps: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Mixture of a slow and a fast unit-variance AR(1); `state` carries across days."""
        w = self.calibration.ar_weight
        phi = np.array(self.calibration.ar_phi, dtype=np.float32)[:, None]
        eps *= np.sqrt(1 - phi**2)[:, None, :]
        for t in range(eps.shape[1]):
            state *= phi
            state += eps[:, t]
            eps[:, t] = state
        return eps[0] * np.float32(np.sqrt(w)) + eps[1] * np.float32(np.sqrt(1 - w))

    def _severity(self, t0: int) -> np.ndarray:
        sev = np.zeros((STEPS_PER_DAY, self.n), dtype=np.float32)
        seg, t = self._effects.cells(t0, t0 + STEPS_PER_DAY)
        if seg.size:
            clear, peak = self._effects.extra[seg, 0], self._effects.extra[seg, 1]
            ramp = np.minimum(1.0, (t - self._effects.start[seg] + 1) / _RAMP_STEPS)
            recovery = np.exp(-np.maximum(0, t - clear) / _RECOVERY_TAU)
            np.maximum.at(sev, (t - t0, self._effects.sensor[seg]), peak * ramp * recovery)
        return sev

    def _missing(self, t0: int) -> np.ndarray:
        mask = np.zeros((STEPS_PER_DAY, self.n), dtype=bool)
        seg, t = self._outages.cells(t0, t0 + STEPS_PER_DAY)
        mask[t - t0, self._outages.sensor[seg]] = True
        _, t = self._gaps.cells(t0, t0 + STEPS_PER_DAY)
        mask[t - t0] = True
        return mask


def _walk(real: SensorGraph, n: int, rng: np.random.Generator) -> np.ndarray:
    """n real sensor indices along downstream paths, jumping at dead ends and now and then."""
    down = [[real.index_of(s) for s in real.downstream(sid)] for sid in real.sensor_ids]
    out = np.empty(n, dtype=np.int64)
    visited: set[int] = set()
    node = int(rng.integers(len(real)))
    for i in range(n):
        out[i] = node
        visited.add(node)
        nxt = [j for j in down[node] if j not in visited]
        if not nxt or rng.random() < 1 / 40:
            visited.clear()
            node = int(rng.integers(len(real)))
        else:
            node = nxt[0]
    return out


def _upstream_lists(net: _Network) -> list[list[int]]:
    """For each sensor, its strongest upstream feeders (where a queue backs up to)."""
    order = np.lexsort((-net.weight, net.dst))
    feeders: list[list[int]] = [[] for _ in range(len(net))]
    for s, d in zip(net.src[order].tolist(), net.dst[order].tolist(), strict=True):
        if len(feeders[d]) < _UPSTREAM_FANOUT:
            feeders[d].append(s)
    return feeders


def incidents_path(speeds_path: str | Path) -> Path:
    p = Path(speeds_path)
    return p.with_name(f"{p.stem}.incidents.parquet")


def simulate(
    days: int = 28, n_sensors: int = 207, *, seed: int = 0, **options: Any
) -> SimulatedDataset:
    """One-call simulation; options as for `Simulator`."""
    return Simulator(days, n_sensors, seed=seed, **options).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic METR-LA-shaped speeds.")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--sensors", type=int, default=207)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default="2012-03-01 00:00")
    parser.add_argument("--out", type=Path, required=True, help="speeds .parquet")
    parser.add_argument("--data-dir", type=Path, default=None, help="real data for calibration")
    parser.add_argument("--chunk-days", type=int, default=7)
    args = parser.parse_args(argv)
    sim = Simulator(
        args.days, args.sensors, seed=args.seed, start=args.start, data_dir=args.data_dir
    )
    speeds, sidecar = sim.write(args.out, args.chunk_days)
    print(
        f"wrote SYNTHETIC {sim.steps} x {sim.n} speeds to {speeds} and "
        f"{len(sim.incidents)} incidents to {sidecar}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
