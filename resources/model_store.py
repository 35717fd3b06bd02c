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

    @property
    def neural_path(self) -> Path:
        """The neural family's registry, a root of its own beside the trees' (`<root>-neural`):
        the API serves `latest` of the trees' root, whose features a neural graph lacks."""
        return self.path.with_name(f"{self.path.name}-neural")
