"""The sensor network the platform serves and where its reference files are, for assets and
checks (read from the settings once, when the code location binds its resources)."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from traffic_core.datasets import SensorGraph, default_data_dir
from traffic_core.ingestion.config import sensor_catalogue
from traffic_core.lake_storage import LakePath
from traffic_core.networks import load_network_graph
from traffic_core.reference import known_sensor_ids


class NetworkResource(ConfigurableResource):
    """`dataset` is a network name (`metr-la`, `pems-bay`, `synthetic-<n>`); `data_dir` the
    shared data root holding one folder per real network."""

    dataset: str = "metr-la"
    data_dir: str = str(default_data_dir())

    @property
    def dataset_dir(self) -> Path:
        return Path(self.data_dir) / self.dataset

    def graph(self) -> SensorGraph:
        return load_network_graph(self.dataset, self.data_dir)

    def known_sensor_ids(self, lake_root: LakePath) -> frozenset[str] | None:
        """The lake's sensor table, or None before `sensor_graph` is materialized."""
        return known_sensor_ids(lake_root, self.dataset)

    def sensor_catalogue(self, lake_root: LakePath) -> frozenset[str]:
        """The lake's sensor table, else the network's own graph; never nothing."""
        return sensor_catalogue(lake_root, self.dataset, Path(self.data_dir))
