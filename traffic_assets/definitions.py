"""The assets and asset checks of the platform, by stage, as one Dagster `Definitions`.

The code location (`code_location.definitions`) merges these with the sensors, schedules and
resources above them, so nothing here imports `sensors/`.
"""

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from traffic_assets.aggregation import assets as aggregation
from traffic_assets.aggregation import checks as aggregation_checks
from traffic_assets.ingestion import assets as ingestion
from traffic_assets.ingestion import checks as ingestion_checks
from traffic_assets.ingestion import context_assets, context_checks
from traffic_assets.models import (
    baselines,
    best_model,
    candidates,
    neural_model,
    spark_training_features,
    training_data,
)
from traffic_assets.reference import sensor_graph
from traffic_assets.streams import aggregates_stream
from traffic_assets.streams import checks as stream_checks

defs = Definitions(
    assets=load_assets_from_modules(
        [
            sensor_graph,
            ingestion,
            context_assets,
            aggregation,
            training_data,
            spark_training_features,
            candidates,
            baselines,
            best_model,
            neural_model,
            aggregates_stream,
        ]
    ),
    asset_checks=load_asset_checks_from_modules(
        [ingestion_checks, context_checks, aggregation_checks, stream_checks]
    ),
)
