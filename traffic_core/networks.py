"""Sensor networks by name (TRAFFIC_DATASET, TRAFFIC_API_DATASET): the real graphs and the
simulator's `synthetic-<n>`.

It sits above both the dataset loaders and the simulator, so neither has to import the other.
"""

from __future__ import annotations

import os

from traffic_core.datasets.graph import SensorGraph, load_metr_la_graph, load_pems_bay_graph
from traffic_core.datasets.speeds import DatasetError
from traffic_core.simulation import synthetic_graph

__all__ = ["NETWORKS", "SYNTHETIC_NETWORK", "load_network_graph", "synthetic_network_size"]

NETWORKS = {"metr-la": load_metr_la_graph, "pems-bay": load_pems_bay_graph}
SYNTHETIC_NETWORK = "synthetic-"
"""`synthetic-<n>`: the simulator's freeway-like graph of n sensors (seed 0), so the API and the
pipeline can run on SYNTHETIC networks of any size, e.g. TRAFFIC_API_DATASET=synthetic-2000."""


def synthetic_network_size(name: str) -> int | None:
    """n for a `synthetic-<n>` name (n >= 1), None for any other name."""
    if not name.startswith(SYNTHETIC_NETWORK):
        return None
    digits = name.removeprefix(SYNTHETIC_NETWORK)
    return int(digits) if digits.isdigit() and int(digits) >= 1 else None


def load_network_graph(name: str, data_dir: str | os.PathLike[str] | None = None) -> SensorGraph:
    """The graph of a network by name, with a clear error for unknown ones."""
    n = synthetic_network_size(name)
    if n is not None:
        return synthetic_graph(n)
    if name not in NETWORKS:
        known = [*sorted(NETWORKS), f"{SYNTHETIC_NETWORK}<n>"]
        raise DatasetError(f"{name!r} is not a known network; choose one of {known}")
    return NETWORKS[name](data_dir)
