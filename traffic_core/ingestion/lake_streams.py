"""The streams the lake ingests, each a raw zone and the classifier that fills it.

Every stream goes through the same exactly-once range writer (`ingest_ranges`): immutable
offset-range files per daily partition, rejects to the DLQ with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from traffic_core.events.context_validation import INCIDENT_RULES, WEATHER_RULES
from traffic_core.ingestion.ranges import Classifier, classify_range, context_classifier
from traffic_core.lake import INCIDENTS, READINGS, WEATHER, RawZone


@dataclass(frozen=True)
class LakeStream:
    name: str
    zone: RawZone
    classify: Classifier


READINGS_STREAM = LakeStream("readings", READINGS, classify_range)
INCIDENTS_STREAM = LakeStream("incidents", INCIDENTS, context_classifier(INCIDENT_RULES, INCIDENTS))
WEATHER_STREAM = LakeStream("weather", WEATHER, context_classifier(WEATHER_RULES, WEATHER))
