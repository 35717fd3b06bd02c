"""PostgreSQL for platform tables (e.g. audit records), separate from Dagster's own storage."""

from __future__ import annotations

from dagster import ConfigurableResource


class PostgresResource(ConfigurableResource):
    """Connection URL only; callers open short-lived connections."""

    url: str
