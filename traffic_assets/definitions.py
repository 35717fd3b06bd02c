"""The Dagster code location: every asset, check, sensor and schedule of the platform."""

from dagster import Definitions, load_assets_from_modules

from resources import build_resources
from sensors.kafka_offsets import kafka_offsets_sensor
from traffic_assets.ingestion import assets as ingestion
from traffic_assets.reference import sensor_graph

defs = Definitions(
    assets=load_assets_from_modules([sensor_graph, ingestion]),
    sensors=[kafka_offsets_sensor],
    resources=build_resources(),
)
