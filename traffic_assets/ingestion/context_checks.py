"""Checks on each daily partition of the incident and weather zones.

The value checks block, as the readings' speed range does: a stored record breaking the
contract means validation let it through, and features would carry it into models. The DLQ
rate only warns (a producer's health, not the lake's).
"""

from datetime import date

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    asset_check,
)

from resources.lake import LakeResource
from traffic_assets.ingestion.checks import dlq_rate_check
from traffic_assets.ingestion.context_assets import raw_traffic_incidents, raw_weather_observations
from traffic_assets.partitions import daily_partitions
from traffic_core.events import INCIDENT, load_event_schema
from traffic_core.events.context_validation import (
    MAX_PRECIPITATION_MM,
    MAX_VISIBILITY_KM,
    TEMPERATURE_RANGE_C,
)
from traffic_core.lake import INCIDENTS, WEATHER, read_raw_day

SEVERITIES = frozenset(
    next(f for f in load_event_schema(INCIDENT, 1)["fields"] if f["name"] == "severity")["type"][
        "symbols"
    ]
)

incidents_dlq_rate = dlq_rate_check(raw_traffic_incidents)
weather_dlq_rate = dlq_rate_check(raw_weather_observations)


def _outside(values: pd.Series, low: float, high: float) -> int:
    present = values.dropna()
    return int(((present < low) | (present > high)).sum())


@asset_check(
    asset=raw_traffic_incidents,
    partitions_def=daily_partitions,
    blocking=True,
    description="Stored incidents end after they start, carry a known severity level and "
    "start on the partition's date.",
)
def incidents_valid(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    day = date.fromisoformat(context.partition_key)
    rows = read_raw_day(lake.path(), day, INCIDENTS)
    ends_early = int((rows["end_time"].notna() & (rows["end_time"] < rows["start_time"])).sum())
    bad_severity = int((~rows["severity"].isin(SEVERITIES)).sum())
    wrong_day = int((rows["start_time"].dt.date != day).sum())
    return AssetCheckResult(
        passed=ends_early + bad_severity + wrong_day == 0,
        metadata={
            "incidents": len(rows),
            "ends_before_start": ends_early,
            "unknown_severity": bad_severity,
            "other_date": wrong_day,
            "synthetic": int(rows["is_synthetic"].sum()),
        },
    )


@asset_check(
    asset=raw_weather_observations,
    partitions_def=daily_partitions,
    blocking=True,
    description="Stored weather measurements are physical (precipitation and visibility not "
    "negative nor beyond records, temperature in range); absent ones are null, never 0.",
)
def weather_values_valid(
    context: AssetCheckExecutionContext, lake: LakeResource
) -> AssetCheckResult:
    rows = read_raw_day(lake.path(), date.fromisoformat(context.partition_key), WEATHER)
    outside = {
        "precipitation_outside": _outside(rows["precipitation_mm"], 0.0, MAX_PRECIPITATION_MM),
        "visibility_outside": _outside(rows["visibility_km"], 0.0, MAX_VISIBILITY_KM),
        "temperature_outside": _outside(rows["temperature_c"], *TEMPERATURE_RANGE_C),
    }
    return AssetCheckResult(
        passed=sum(outside.values()) == 0,
        metadata={
            "observations": len(rows),
            "synthetic": int(rows["is_synthetic"].sum()),
            **outside,
        },
    )
