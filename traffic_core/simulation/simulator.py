"""The simulator: plans outages, gaps and incidents for the whole span up front, then generates
speeds day by day from calibrated weekly profiles, correlated noise and incident queues."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traffic_core.datasets.graph import SensorGraph
from traffic_core.datasets.speeds import FREQ, finalise_speeds, parquet_metadata, save_parquet
from traffic_core.simulation.calibration import (
    STEP,
    STEPS_PER_DAY,
    WEEK_SLOTS,
    Calibration,
    calibrate,
    week_slots,
)
from traffic_core.simulation.network import (
    Network,
    RoadSmoother,
    real_subset,
    synthetic_network,
    upstream_feeders,
    walk_downstream,
)
from traffic_core.simulation.seeds import (
    DAY_STREAM,
    GAPS_STREAM,
    INCIDENTS_STREAM,
    INIT_STREAM,
    OUTAGES_STREAM,
    PROFILES_STREAM,
)
from traffic_core.simulation.segments import Segments, covered_share
from traffic_core.simulation.weather import slow_for_weather

GENERATOR = "traffic_core.simulator/1"
"""Written into every output's metadata; kept as first published, so files stay traceable."""
MIN_SPEED, MAX_SPEED = 1.0, 70.0  # METR-LA's observed range
INCIDENT_COLUMNS = [
    "incident_id",
    "sensor_id",
    "start",
    "end",
    "severity",
    "affected_sensors",
    "source",
]

# Incident dynamics (steps of 5 minutes).
_RAMP_STEPS, _RECOVERY_TAU, _RECOVERY_TAIL = 2.0, 3.0, 15
_UPSTREAM_DECAY = 0.75


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
        self._smooth = RoadSmoother(self.network, calib.spatial_mix)
        self._profile_params()
        self._gaps = self._plan_gaps(network_gap_rate)
        self._outages = self._plan_outages(missing_rate, covered_share(self._gaps, self.steps))
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
    ) -> tuple[SensorGraph | None, Network, str]:
        """A supplied graph wins; else the real METR-LA graph (or a connected part of it)
        up to 207 sensors, and a synthetic one beyond."""
        real = self.calibration.graph
        if graph is None and n <= len(real):
            graph = real if n == len(real) else real_subset(real, n)
            kind = "metr-la" if n == len(real) else "metr-la subset"
        elif graph is None:
            return None, synthetic_network(n, self.seed), "synthetic"
        else:
            kind = "supplied"
        return graph, Network.of(graph), kind

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
            rng = np.random.default_rng([self.seed, PROFILES_STREAM])
            base = walk_downstream(calib.graph, self.n, rng)
            shift = rng.integers(-3, 4, self.n)
            level = rng.uniform(0.95, 1.03, self.n)
            gain = np.exp(rng.normal(0, 0.15, self.n))
            self.profile_source = "resampled"
        self._base, self._shift = base, shift
        self._free_flow = (level * calib.free_flow[base]).astype(np.float32)
        self._depth_gain = (level * gain).astype(np.float32)
        self._depth_week = calib.free_flow[:, None] - calib.week  # (207, 2016)

    def _plan_gaps(self, rate: float) -> Segments:
        """Whole-network gaps (all sensors zero), 5 minutes to 3 hours."""
        rng = np.random.default_rng([self.seed, GAPS_STREAM])
        k = rng.poisson(rate * self.days)
        start = rng.integers(0, self.steps, k)
        length = np.clip(np.rint(rng.lognormal(np.log(4), 0.8, k)), 1, 36).astype(np.int64)
        return Segments.of(np.full(k, -1), start, start + length)

    def _plan_outages(self, target: float, network_share: float) -> Segments:
        """Single-sensor outages: lognormal lengths (median 30 min, up to 3 days) at
        per-sensor rates that vary a lot (some detectors are far flakier), tuned so that
        gaps plus outages give `target` zeros overall."""
        rng = np.random.default_rng([self.seed, OUTAGES_STREAM])
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
        return Segments.of(sensor, start, start + length.astype(np.int64))

    def _plan_incidents(self, rate: float) -> tuple[pd.DataFrame, Segments]:
        """Incidents (more by day than by night) slow their sensor by `severity`; the queue
        then backs up the strongest upstream links hop by hop, weaker at each hop, and
        clears after the incident ends with an exponential recovery."""
        rng = np.random.default_rng([self.seed, INCIDENTS_STREAM])
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
        upstream = upstream_feeders(self.network)
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
        segments = Segments.of(
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
        rng = np.random.default_rng([self.seed, INIT_STREAM])
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

    def write(
        self, path: str | Path, chunk_days: int = 7, weather: pd.DataFrame | None = None
    ) -> tuple[Path, Path]:
        """Stream speeds to Parquet (synthetic flag and metadata in the key-value metadata)
        and incidents to the sidecar `<stem>.incidents.parquet`; with `weather` (from
        `simulate_weather`), speeds are slowed by its rain."""
        chunks = self.iter_chunks(chunk_days)
        if weather is not None:
            chunks = (slow_for_weather(chunk, weather) for chunk in chunks)
        out = save_parquet(chunks, path, metadata=self.metadata)
        sidecar = incidents_path(out)
        table = pa.Table.from_pandas(self.incidents, preserve_index=False)
        meta = {**(table.schema.metadata or {}), **parquet_metadata(self.attrs, self.metadata)}
        pq.write_table(table.replace_schema_metadata(meta), sidecar)
        return out, sidecar

    def _day(self, d: int, state: np.ndarray) -> np.ndarray:
        calib = self.calibration
        rng = np.random.default_rng([self.seed, DAY_STREAM, d])
        t0 = d * STEPS_PER_DAY
        slots = week_slots(self.start + t0 * STEP, STEPS_PER_DAY)
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


def incidents_path(speeds_path: str | Path) -> Path:
    p = Path(speeds_path)
    return p.with_name(f"{p.stem}.incidents.parquet")


def weather_path(speeds_path: str | Path) -> Path:
    """The weather sidecar, a CSV the producer's `--weather` replays."""
    p = Path(speeds_path)
    return p.with_name(f"{p.stem}.weather.csv")


def simulate(
    days: int = 28, n_sensors: int = 207, *, seed: int = 0, **options: Any
) -> SimulatedDataset:
    """One-call simulation; options as for `Simulator`."""
    return Simulator(days, n_sensors, seed=seed, **options).run()
