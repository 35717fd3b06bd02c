"""Road networks for simulation: real graphs as link lists, synthetic freeway-like graphs of any
size, and noise smoothed along roads. Links, never a dense n x n matrix, so 10,000 sensors fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traffic_core.datasets.graph import SensorGraph
from traffic_core.simulation.seeds import GRAPH_STREAM

UPSTREAM_FANOUT = 2
"""Upstream links an incident's queue backs up along, per sensor."""


@dataclass(frozen=True, eq=False)
class Network:
    """A road graph as directed links (src upstream of dst), no self-loops. The simulator
    works on this so 10,000 sensors never need a dense 10,000 x 10,000 adjacency."""

    sensor_ids: list[str]
    locations: pd.DataFrame
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray

    @classmethod
    def of(cls, graph: SensorGraph) -> Network:
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
    return synthetic_network(n, seed).to_graph()


def synthetic_network(n: int, seed: int) -> Network:
    if n < 1:
        raise ValueError("a synthetic graph needs n >= 1")
    rng = np.random.default_rng([seed, GRAPH_STREAM])
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
    return Network(
        ids, locations, np.concatenate(src)[keep], np.concatenate(dst)[keep], weight[keep]
    )


def real_subset(graph: SensorGraph, n: int) -> SensorGraph:
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


class RoadSmoother:
    """x -> (1 - mix) x + mix P x over the undirected, row-normalised road graph, rescaled
    to unit variance per sensor: iid noise in, noise correlated along roads out. A sparse
    segment sum, so cost grows with links, not sensors squared."""

    def __init__(self, net: Network, mix: float) -> None:
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


def walk_downstream(real: SensorGraph, n: int, rng: np.random.Generator) -> np.ndarray:
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


def upstream_feeders(net: Network) -> list[list[int]]:
    """For each sensor, its strongest upstream feeders (where a queue backs up to)."""
    order = np.lexsort((-net.weight, net.dst))
    feeders: list[list[int]] = [[] for _ in range(len(net))]
    for s, d in zip(net.src[order].tolist(), net.dst[order].tolist(), strict=True):
        if len(feeders[d]) < UPSTREAM_FANOUT:
            feeders[d].append(s)
    return feeders
