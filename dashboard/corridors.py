"""Corridors: chains of neighbouring sensors along one road, from the upstream/downstream links.

METR-LA's links come from a road-distance kernel, so a sensor lists many up- and downstream
sensors, nearest by road first (the order `SensorGraph.upstream/downstream` gives and the API
passes on). A chain keeps only mutual first links: i -> j when j is first among i's downstream
sensors and i first among j's upstream ones. Every sensor then has at most one successor and one
predecessor, so the links split the network into disjoint chains that follow the road, which a
planner reads as "the stretch from A to B". (Nearest by straight-line distance instead would
often jump across the highway to the opposite carriageway and give chains of two.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import pandas as pd

from serving.schemas import SensorInfo

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class Corridor:
    sensors: tuple[str, ...]
    """Sensor ids in the direction of traffic."""
    length_km: float

    @property
    def name(self) -> str:
        return f"{self.sensors[0]} → {self.sensors[-1]}"


def distance_km(a: SensorInfo, b: SensorInfo) -> float:
    """Great-circle distance (haversine): plenty for sensors a few km apart."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def _first_known(
    candidates: Sequence[str], known: Mapping[str, SensorInfo], own: str
) -> str | None:
    return next((c for c in candidates if c in known and c != own), None)


def corridors(sensors: Sequence[SensorInfo]) -> list[Corridor]:
    """Every sensor in exactly one chain (single sensors too), longest chains first."""
    by_id = {s.sensor_id: s for s in sensors}
    first_down = {s.sensor_id: _first_known(s.downstream, by_id, s.sensor_id) for s in sensors}
    first_up = {s.sensor_id: _first_known(s.upstream, by_id, s.sensor_id) for s in sensors}
    successor = {i: j for i, j in first_down.items() if j is not None and first_up.get(j) == i}
    predecessor = {j: i for i, j in successor.items()}
    unvisited = set(by_id)

    def walk(head: str) -> list[str]:
        chain = [head]
        unvisited.discard(head)
        while (nxt := successor.get(chain[-1])) in unvisited:
            chain.append(nxt)
            unvisited.discard(nxt)
        return chain

    chains = [walk(head) for head in sorted(set(by_id) - set(predecessor))]
    while unvisited:  # what remains lies on cycles: cut each at its smallest id
        chains.append(walk(min(unvisited)))
    found = [
        Corridor(
            tuple(chain),
            sum(distance_km(by_id[a], by_id[b]) for a, b in pairwise(chain)),
        )
        for chain in chains
    ]
    return sorted(found, key=lambda c: (-len(c.sensors), c.sensors))


def worst_corridors(
    found: Sequence[Corridor],
    speeds: Mapping[str, float | None],
    min_sensors: int = 3,
    limit: int = 10,
) -> pd.DataFrame:
    """Corridors of at least `min_sensors` ranked by their mean current speed, slowest first;
    a corridor with no reporting sensor cannot be ranked and is left out."""
    rows = []
    for corridor in found:
        if len(corridor.sensors) < min_sensors:
            continue
        reported = {s: speeds[s] for s in corridor.sensors if speeds.get(s) is not None}
        reported = {s: v for s, v in reported.items() if not math.isnan(v)}
        if not reported:
            continue
        slowest = min(reported, key=lambda s: reported[s])
        rows.append(
            {
                "corridor": corridor.name,
                "sensors": len(corridor.sensors),
                "reporting": len(reported),
                "length_km": round(corridor.length_km, 1),
                "mean_speed_mph": round(sum(reported.values()) / len(reported), 1),
                "slowest_sensor": slowest,
                "slowest_speed_mph": round(reported[slowest], 1),
                "sensor_ids": " ".join(corridor.sensors),
            }
        )
    columns = [
        "corridor",
        "sensors",
        "reporting",
        "length_km",
        "mean_speed_mph",
        "slowest_sensor",
        "slowest_speed_mph",
        "sensor_ids",
    ]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["mean_speed_mph", "corridor"]).head(limit).reset_index(drop=True)
