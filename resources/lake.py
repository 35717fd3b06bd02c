"""The data lake root: raw events, aggregates and features as Parquet."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from dagster import ConfigurableResource

from traffic_core import lake as layout


def local_lake_path(root: str) -> Path:
    """A plain path, or a `file:` URL (`file:///x`, or `file:/x` as pathlib leaves it)."""
    parsed = urlparse(root)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"lake root {root!r}: a file URL must name a local path")
        return Path(url2pathname(parsed.path))
    if parsed.scheme:
        raise ValueError(
            f"lake root {root!r}: only local folders (a path or a file:// URL) are supported"
        )
    return Path(root)


class LakeResource(ConfigurableResource):
    """A folder (local path or `file://` URL) under which every asset writes its own zone."""

    root: str

    def path(self, *parts: str) -> Path:
        return local_lake_path(self.root).joinpath(*parts)

    def aggregates_file(self, day: date | str) -> Path:
        return layout.aggregates_file(self.path(), day)

    def aggregates_files(self, days: Iterable[str] | None = None) -> dict[date, Path]:
        return layout.aggregates_files(self.path(), days)

    def features_dir(self) -> Path:
        return layout.features_dir(self.path())
