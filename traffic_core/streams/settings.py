"""Stream processor settings from TRAFFIC_STREAM_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from traffic_core.settings import LOCAL_STATE_DIR

DEFAULT_GROUP = "traffic-stream-aggregates"


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAFFIC_STREAM_", extra="ignore")

    group_id: str = DEFAULT_GROUP
    grace_seconds: float = Field(
        default=300.0,
        description="How long after its end a window still takes readings; METR-LA reports "
        "every 5 minutes, so a window closes with its sensor's reading one step later.",
    )
    commit_interval_seconds: float = Field(
        default=1.0,
        description="Checkpoint (Kafka transaction) period: aggregates become visible to "
        "read_committed consumers at each commit, so this bounds their latency.",
    )
    state_dir: Path = Field(
        default=LOCAL_STATE_DIR / "streams" / "state",
        description="Local RocksDB state; a cache of the changelog topics, safe to delete.",
    )
    transaction_timeout_ms: int = Field(
        default=15_000,
        description="A killed instance's open transaction blocks read_committed readers of "
        "its partitions until the broker aborts it after this long.",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        description="How long a silent (killed) instance keeps its partitions.",
    )
    metrics_port: int = 9110
    metrics_host: str = "127.0.0.1"
