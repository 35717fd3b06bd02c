"""The API's context state: traffic incidents (active and recent) and the latest weather per
station, fed from `traffic-incidents` and `weather-observations`.

Time is event time, as everywhere in the live state: an incident is active at `t` when it has
started and neither ended (`end_time`) nor gone `open_for` without an end report (expired);
the caller supplies `t` (the newest closed window's end), so a replay of 2012 behaves as it did
then. A report with an incident id seen before replaces it (an end time arriving later).

Memory is bounded: ended and expired incidents stay `recent_for` and are then dropped, and past
`max_incidents` the ones that finished earliest go first. Which sensors an incident reaches
(`IncidentReach`) is computed once for the whole road graph, so flagging the forecasts of a
window costs the active incidents times their reach, never incidents times sensors.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import dijkstra

from traffic_core.datasets import SensorGraph

IncidentStatus = Literal["upcoming", "active", "ended", "expired"]
MAX_FLAGS = 5
"""Incidents a forecast names at most (the nearest); GET /v1/incidents?sensor_id= lists all."""


class IncidentReach:
    """For each sensor, the sensors within `max_hops` road-graph links of it, either way, with
    signed hops: negative where the incident's sensor is upstream of the reached sensor,
    positive where downstream (the reached sensor is in its queue), 0 at it."""

    def __init__(self, graph: SensorGraph, max_hops: int = 2) -> None:
        self.max_hops = max_hops
        self.sensor_ids = list(graph.sensor_ids)
        self._index = {s: i for i, s in enumerate(self.sensor_ids)}
        links = sparse.csr_array(graph.adjacency > 0, dtype="float64")
        links.setdiag(0)
        links.eliminate_zeros()
        ahead = dijkstra(links, directed=True, unweighted=True, limit=max_hops)
        behind = ahead.T  # behind[i, j]: hops from j down to i (j is upstream of i)
        closer_ahead = np.isfinite(ahead) & ~(behind <= ahead)
        signed = np.where(closer_ahead, -ahead, behind)
        self._reach: list[dict[str, int]] = [
            {self.sensor_ids[j]: int(signed[i, j]) for j in np.flatnonzero(np.isfinite(signed[i]))}
            for i in range(len(self.sensor_ids))
        ]

    def of(self, sensor_id: str) -> dict[str, int]:
        """Reached sensor -> signed hops; empty for a sensor the graph does not know."""
        index = self._index.get(sensor_id)
        return {} if index is None else self._reach[index]

    def __contains__(self, sensor_id: str) -> bool:
        return sensor_id in self._index


@dataclass(frozen=True)
class Incident:
    incident_id: str
    sensor_id: str
    start_time: datetime
    end_time: datetime | None
    severity: str
    affected_sensors: tuple[str, ...]
    source: str
    is_synthetic: bool
    reach: Mapping[str, int | None]
    """Sensors it affects: the road-graph reach of its sensor and the reported affected
    sensors (hops None where the graph does not link them within the limit)."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any], reach: IncidentReach) -> Incident:
        near: dict[str, int | None] = dict(reach.of(record["sensor_id"]))
        for sensor in record["affected_sensors"]:
            if sensor in reach:
                near.setdefault(sensor, None)
        return cls(
            incident_id=record["incident_id"],
            sensor_id=record["sensor_id"],
            start_time=record["start_time"],
            end_time=record["end_time"],
            severity=record["severity"],
            affected_sensors=tuple(record["affected_sensors"]),
            source=record["source"],
            is_synthetic=bool(record["is_synthetic"]),
            reach=near,
        )

    def finished(self, open_for: timedelta) -> datetime:
        """When it stops being active: its end, or its expiry without one."""
        return self.end_time if self.end_time is not None else self.start_time + open_for

    def status(self, at: datetime, open_for: timedelta) -> IncidentStatus:
        if at < self.start_time:
            return "upcoming"
        if at < self.finished(open_for):
            return "active"
        return "ended" if self.end_time is not None else "expired"

    def flag(self, sensor_id: str) -> dict[str, Any]:
        """What a forecast of `sensor_id` says about this incident (IncidentFlag)."""
        return {
            "incident_id": self.incident_id,
            "sensor_id": self.sensor_id,
            "hops": self.reach.get(sensor_id),
            "severity": self.severity,
            "start_time": self.start_time,
            "is_synthetic": self.is_synthetic,
        }


class IncidentBook:
    """Incidents by id, thread-safe (the consumer writes, requests and forecasts read)."""

    def __init__(
        self,
        reach: IncidentReach,
        open_for: timedelta = timedelta(hours=6),
        recent_for: timedelta = timedelta(hours=6),
        max_incidents: int = 10_000,
    ) -> None:
        self.reach = reach
        self.open_for = open_for
        self.recent_for = recent_for
        self.max_incidents = max_incidents
        self._by_id: dict[str, Incident] = {}
        self._lock = threading.Lock()
        self.newest_start: datetime | None = None
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def apply(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace incidents (last report wins); returns how many were applied."""
        applied = 0
        with self._lock:
            for record in records:
                incident = Incident.from_record(record, self.reach)
                self._by_id.pop(incident.incident_id, None)  # re-inserted: newest report last
                self._by_id[incident.incident_id] = incident
                if self.newest_start is None or incident.start_time > self.newest_start:
                    self.newest_start = incident.start_time
                applied += 1
            if len(self._by_id) > self.max_incidents:
                self._evict(len(self._by_id) - self.max_incidents)
        return applied

    def _evict(self, count: int) -> None:
        """Drop the `count` incidents that finished (or will finish) first."""
        order = sorted(self._by_id.values(), key=lambda i: i.finished(self.open_for))
        for incident in order[:count]:
            del self._by_id[incident.incident_id]
        self.evicted += count

    def prune(self, at: datetime) -> None:
        """Forget incidents finished longer than `recent_for` before `at`."""
        horizon = at - self.recent_for
        with self._lock:
            gone = [k for k, i in self._by_id.items() if i.finished(self.open_for) < horizon]
            for key in gone:
                del self._by_id[key]

    def listing(self, at: datetime) -> list[tuple[Incident, IncidentStatus]]:
        """Active and recent (ended or expired within `recent_for`) incidents at `at`, the
        latest started first."""
        self.prune(at)
        with self._lock:
            incidents = list(self._by_id.values())
        found = [(i, i.status(at, self.open_for)) for i in incidents]
        kept = [(i, s) for i, s in found if s != "upcoming"]
        return sorted(kept, key=lambda pair: pair[0].start_time, reverse=True)

    def active(self, at: datetime) -> list[Incident]:
        with self._lock:
            incidents = list(self._by_id.values())
        return [i for i in incidents if i.status(at, self.open_for) == "active"]

    def flags(self, at: datetime, per_sensor: int = MAX_FLAGS) -> dict[str, list[dict[str, Any]]]:
        """Per reached sensor, the `per_sensor` nearest active incidents at `at` (nearest
        first, then by id): the work is the active incidents times their precomputed reach,
        and a forecast's size stays bounded however many incidents there are."""
        near: dict[str, list[tuple[float, str, Incident]]] = {}
        for incident in self.active(at):
            for sensor, hops in incident.reach.items():
                distance = float("inf") if hops is None else abs(hops)
                near.setdefault(sensor, []).append((distance, incident.incident_id, incident))
        return {
            sensor: [
                incident.flag(sensor)
                for *_, incident in heapq.nsmallest(per_sensor, found, key=_by_distance)
            ]
            for sensor, found in near.items()
        }


def _by_distance(candidate: tuple[float, str, Incident]) -> tuple[float, str]:
    return candidate[0], candidate[1]


class WeatherBoard:
    """The newest observation per station (an older one arriving late never replaces it), at
    most `max_stations` (the least recently observed dropped first)."""

    def __init__(self, max_stations: int = 1_000) -> None:
        self.max_stations = max_stations
        self._latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._latest)

    def apply(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Keep each observation newer than its station's; returns how many were kept."""
        with self._lock:
            kept = sum(map(self._keep, records))
            surplus = len(self._latest) - self.max_stations
            if surplus > 0:
                order = sorted(self._latest.values(), key=lambda r: r["observed_at"])
                for record in order[:surplus]:
                    del self._latest[record["station_id"]]
        return kept

    def _keep(self, record: Mapping[str, Any]) -> bool:
        held = self._latest.get(record["station_id"])
        if held is not None and record["observed_at"] < held["observed_at"]:
            return False
        self._latest[record["station_id"]] = dict(record)
        return True

    def latest(self) -> list[dict[str, Any]]:
        """Each station's newest observation, stations in name order."""
        with self._lock:
            return [dict(self._latest[s]) for s in sorted(self._latest)]

    def newest(self) -> datetime | None:
        with self._lock:
            return max((r["observed_at"] for r in self._latest.values()), default=None)
