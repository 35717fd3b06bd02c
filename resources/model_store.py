"""Where versioned model artifacts and the `latest` pointer live."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource


class ModelStoreResource(ConfigurableResource):
    """Root folder of the model registry shared with the prediction API."""

    root: str

    @property
    def path(self) -> Path:
        return Path(self.root)
