"""The data lake root: raw events, aggregates and features as Parquet."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource


class LakeResource(ConfigurableResource):
    """A folder (local path) under which every asset writes its own zone."""

    root: str

    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)
