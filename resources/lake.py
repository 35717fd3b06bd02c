"""The data lake root: raw events, aggregates and features as Parquet."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path

from dagster import ConfigurableResource

from traffic_core import lake as layout
from traffic_core.lake_storage import LakePath, lake_path, local_only


class LakeResource(ConfigurableResource):
    """A root (local path, `file://` URL or `hdfs://host:port/path`) under which every asset
    writes its own zone.

    `path` serves the code that reads and writes through `traffic_core.lake_storage` (the raw
    zone); `local_path` and the zone helpers below serve code that still works on local files
    and refuse a remote root with a message rather than failing half-way.
    """

    root: str

    def path(self, *parts: str) -> LakePath:
        return lake_path(self.root).joinpath(*parts)

    def local_path(self, *parts: str) -> Path:
        return local_only(self.path(*parts))

    def aggregates_file(self, day: date | str) -> Path:
        return layout.aggregates_file(self.local_path(), day)  # type: ignore[return-value]

    def aggregates_files(self, days: Iterable[str] | None = None) -> dict[date, Path]:
        return layout.aggregates_files(self.local_path(), days)  # type: ignore[return-value]

    def features_dir(self) -> Path:
        return layout.features_dir(self.local_path())  # type: ignore[return-value]
