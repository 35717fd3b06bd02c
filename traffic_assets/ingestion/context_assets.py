"""`raw_traffic_incidents` and `raw_weather_observations`: the context streams in the lake.

Same writer and rules as the readings (`ingest_partition`): exact Kafka offset ranges, one
immutable Parquet file per (date, topic, partition, offset range), rejects to the DLQ with their
reason. Simulated records keep `is_synthetic`, so features built on them are labelled too.
"""

from traffic_assets.ingestion.assets import raw_stream_asset
from traffic_core.ingestion.lake_streams import INCIDENTS_STREAM, WEATHER_STREAM

raw_traffic_incidents = raw_stream_asset(
    "raw_traffic_incidents",
    INCIDENTS_STREAM,
    "Incident reports from traffic-incidents, filed under their start date: one immutable "
    "Parquet file per offset range; rejects go to the DLQ.",
)
raw_weather_observations = raw_stream_asset(
    "raw_weather_observations",
    WEATHER_STREAM,
    "Weather observations from weather-observations, by observation date: one immutable "
    "Parquet file per offset range; rejects go to the DLQ.",
)
