"""The Dagster code location: each domain's definitions merged, with the resources they bind.

It sits on top of the import ladder (core <- resources <- assets <- sensors <- here), so the
domains never import upwards to find each other.
"""

from dagster import Definitions, in_process_executor

import sensors.definitions
import traffic_assets.definitions
from resources import build_resources

defs = Definitions.merge(
    traffic_assets.definitions.defs,
    sensors.definitions.defs,
    Definitions(
        resources=build_resources(),
        # One process per run, not per step: a step subprocess spends 20-35 s importing the code
        # location on these 2 cores to do about a second of work (an ingestion run with its four
        # checks took 128 s, 4 s of it working). Steps of a run still use every core themselves
        # (Spark, XGBoost, forests).
        executor=in_process_executor,
    ),
)
