"""Networks by name (TRAFFIC_DATASET / TRAFFIC_API_DATASET): the real graphs and `synthetic-<n>`."""

from __future__ import annotations

import numpy as np
import pytest

from traffic_core.datasets import DatasetError
from traffic_core.networks import load_network_graph, synthetic_network_size
from traffic_core.simulation import synthetic_graph


def test_synthetic_name_builds_the_simulators_graph_of_that_size() -> None:
    graph = load_network_graph("synthetic-300")
    expected = synthetic_graph(300)
    assert len(graph) == 300
    assert graph.sensor_ids == expected.sensor_ids
    np.testing.assert_array_equal(graph.adjacency, expected.adjacency)
    assert graph.locations.attrs.get("synthetic") is True


def test_synthetic_name_needs_no_data_dir(tmp_path) -> None:
    assert len(load_network_graph("synthetic-20", tmp_path / "nothing-here")) == 20


def test_real_network_names_still_load() -> None:
    assert len(load_network_graph("metr-la")) == 207


@pytest.mark.parametrize(
    "name", ["synthetic-", "synthetic-0", "synthetic--5", "synthetic-2k", "synthetic", "la"]
)
def test_bad_names_fail_clearly(name: str) -> None:
    assert synthetic_network_size(name) is None
    with pytest.raises(DatasetError, match=r"not a known network.*synthetic-<n>"):
        load_network_graph(name)
