"""Request and response bodies of the prediction API: the contract the dashboard and other
services code against, published in the OpenAPI schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.plausibility import GapReason

Congestion = Literal["free_flow", "congested", "severe", "unknown"]
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def in_service_years(value: datetime | None) -> datetime | None:
    """Naive times are UTC; times outside 1990-2100 are typos, refused with a clear message."""
    if value is None:
        return None
    zoned = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= zoned < LATEST:
        raise ValueError(f"{value.isoformat()} is outside {EARLIEST.year}-{LATEST.year}")
    return zoned


SensorId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class CongestionChances(BaseModel):
    """The probability of each congestion class at the target time (they sum to 1, up to
    rounding to 0.001), from the model's out-of-fold errors in the sensor's current class."""

    severe: float = Field(ge=0.0, le=1.0)
    congested: float = Field(ge=0.0, le=1.0)
    free_flow: float = Field(ge=0.0, le=1.0)


class HorizonForecast(BaseModel):
    minutes: Literal[15, 30, 60]
    target_time: datetime = Field(description="Start of the 5-minute window forecast (UTC).")
    speed_mph: float | None = Field(
        description="Point forecast, 0 to 120 mph; null when withheld (see `reason`)."
    )
    lower_mph: float | None = Field(description="Lower bound of the interval (<= speed_mph).")
    upper_mph: float | None = Field(description="Upper bound of the interval (>= speed_mph).")
    coverage: float = Field(description="Nominal coverage of the interval, e.g. 0.9.")
    congestion: Congestion
    reason: GapReason | None = Field(
        default=None,
        description="Why the forecast is withheld (speed and bounds null): the service has "
        "held readings for less than the hour before (warming_up, after a start or restart), "
        "the sensor reported nothing in that hour (sensor_offline), nothing at the window it "
        "is issued for "
        "(no_current_reading), fewer than 6 of the hour's 12 windows (insufficient_history), "
        "or the model answered no number (model_output_invalid). Null when served.",
    )
    probabilities: CongestionChances | None = Field(
        default=None,
        description="Chance of each congestion class; null when withheld or when the model "
        "version has no per-regime calibration.",
    )


Severity = Literal["UNKNOWN", "MINOR", "MODERATE", "MAJOR", "SEVERE"]


class IncidentFlag(BaseModel):
    """An incident active when the forecast was made, on the sensor's road within the API's
    `incident_hops` road-graph links (or reported as affecting it)."""

    incident_id: str
    sensor_id: str = Field(description="Detector closest to the incident.")
    hops: int | None = Field(
        description="Signed road-graph links from the incident to this sensor: negative when "
        "the incident is upstream of it, positive when downstream (this sensor is in its "
        "queue), 0 at it; null when only the report names this sensor as affected."
    )
    severity: Severity
    start_time: datetime
    is_synthetic: bool = Field(description="The report came from the simulator.")


class SensorForecast(BaseModel):
    sensor_id: str
    issued_for: datetime = Field(description="Window start the forecast was made at (UTC).")
    observed_speed_mph: float | None
    observed_congestion: Congestion
    horizons: list[HorizonForecast]
    incidents: list[IncidentFlag] = Field(
        default_factory=list,
        description="Active incidents near this sensor when the forecast was made: the five "
        "nearest, nearest first (GET /v1/incidents?sensor_id= lists all); empty when none.",
    )


class ForecastBatch(BaseModel):
    model_version: str = Field(description="Registry version of the model that made these.")
    issued_for: datetime
    synthetic: bool = Field(description="True when the inputs came from the simulator.")
    forecasts: list[SensorForecast]


class ReadingSource(BaseModel):
    """Where the newest reading behind a forecast came from: its producer replay and its
    place in Kafka, the keys of the raw lake file that stores it (file names hold the
    partition and offset range) and of the ingestion run's Dagster metadata."""

    ingest_id: str | None = Field(description="Producer replay that sent it (null: none).")
    kafka_topic: str
    kafka_partition: int | None
    kafka_offset: int | None
    reading_time: datetime = Field(description="Event time of that reading (UTC).")


class OneForecast(SensorForecast):
    model_version: str
    synthetic: bool
    source: ReadingSource | None = Field(
        description="The newest live reading of this sensor the forecast used; null if the "
        "sensor reported nothing in the last hour."
    )


class Reading(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sensor_id: SensorId
    timestamp: datetime = Field(description="Reading time; naive times are taken as UTC.")
    speed_mph: float | None = Field(
        ge=0.0,
        le=120.0,
        strict=True,
        allow_inf_nan=False,
        description="Speed; 0 or null means the loop reported nothing. A JSON number: "
        "strings, booleans, NaN and Infinity are refused.",
    )

    _years = field_validator("timestamp")(in_service_years)


class ReadingsRequest(BaseModel):
    """Callers with their own data: at least the hour of readings up to `at`."""

    model_config = ConfigDict(extra="forbid")

    readings: list[Reading] = Field(min_length=1, max_length=50_000)
    at: datetime | None = Field(
        default=None, description="Window to forecast from; default the newest reading's."
    )

    _years = field_validator("at")(in_service_years)


class SensorInfo(BaseModel):
    sensor_id: str
    latitude: float
    longitude: float
    upstream: list[str]
    downstream: list[str]


class SensorStatus(BaseModel):
    sensor_id: str
    latitude: float
    longitude: float
    speed_mph: float | None
    congestion: Congestion


class NetworkStatus(BaseModel):
    as_of: datetime | None = Field(description="Newest closed 5-minute window (UTC).")
    synthetic: bool
    sensors_total: int
    sensors_reporting: int
    average_speed_mph: float | None
    counts: dict[Congestion, int]
    sensors: list[SensorStatus]


class NetworkPoint(BaseModel):
    window_start: datetime
    average_speed_mph: float | None
    sensors_reporting: int
    congested: int
    severe: int


class NetworkHistory(BaseModel):
    synthetic: bool
    points: list[NetworkPoint]


class SensorPoint(BaseModel):
    window_start: datetime
    observed_speed_mph: float | None
    forecasts: dict[str, HorizonForecast | None] = Field(
        description="Per horizon ('15', '30', '60'), the forecast made earlier for this window."
    )
    typical_speed_mph: float | None = Field(
        description="The model's typical speed for this time of week (training window only)."
    )


class SensorHistory(BaseModel):
    sensor_id: str
    model_version: str | None
    synthetic: bool
    points: list[SensorPoint]


class Alert(BaseModel):
    alert_id: str
    kind: Literal["raised", "cleared"]
    sensor_id: str
    raised_at: datetime = Field(description="Window start at which the forecast was made.")
    target_time: datetime
    horizon_minutes: int
    from_congestion: Congestion
    to_congestion: Congestion
    forecast_speed_mph: float | None
    model_version: str
    synthetic: bool


class AlertList(BaseModel):
    alerts: list[Alert]


class ModelSummary(BaseModel):
    version: str
    created_at: datetime
    current: bool
    metrics: dict


class ModelList(BaseModel):
    current: str | None
    models: list[ModelSummary]


class KafkaOffsetRange(BaseModel):
    topic: str
    partition: int
    first: int
    last: int


class IngestIdCount(BaseModel):
    """A producer replay (its ingest id; null for readings sent without one) and how many of
    its readings a model's training days hold."""

    ingest_id: str | None
    readings: int


class Lineage(BaseModel):
    """Everything an auditor needs to trace a forecast back to the data and code behind it."""

    version: str
    created_at: datetime
    code_version: str
    feature_version: str
    feature_names: list[str]
    training_data_version: str
    lake_partitions: list[str]
    kafka_offsets: list[KafkaOffsetRange]
    ingest_ids: list[IngestIdCount]
    artifacts: dict[str, dict]
    metrics: dict


class ProblemField(BaseModel):
    """One field a request got wrong."""

    loc: list[str | int] = Field(description="Where: ['body', 'readings', 0, 'speed_mph'].")
    msg: str
    type: str = Field(description="Pydantic's error type, e.g. float_type, less_than_equal.")


class Problem(BaseModel):
    """An RFC 9457 problem (`application/problem+json`): every error the API answers. Its
    X-Request-ID header finds the request in the access log and the audit table."""

    type: str = Field(default="about:blank", description="about:blank: the status says it.")
    title: str = Field(description="The status's phrase, e.g. 'Not Found'.")
    status: int
    detail: str = Field(description="What was wrong, for people.")
    instance: str = Field(description="The request's path.")
    errors: list[ProblemField] | None = Field(
        default=None, description="422 only: each field that failed validation."
    )


class IncidentOut(BaseModel):
    """An incident report as the API holds it (the latest report of its id)."""

    incident_id: str
    status: Literal["active", "ended", "expired"] = Field(
        description="At `as_of`: active; ended (its end_time passed); expired (no end report "
        "within the API's `incident_open_hours` of its start)."
    )
    sensor_id: str
    latitude: float
    longitude: float
    start_time: datetime
    end_time: datetime | None
    severity: Severity
    affected_sensors: list[str] = Field(description="As reported (sensors known to the API).")
    reach: dict[str, int | None] = Field(
        description="The affected stretch: every sensor whose forecasts it flags, with signed "
        "hops (see IncidentFlag.hops)."
    )
    source: str
    is_synthetic: bool


class IncidentList(BaseModel):
    as_of: datetime | None = Field(
        description="The event time the statuses are for: the newest closed window's end "
        "(before any reading: the newest incident start); null when nothing is known."
    )
    synthetic: bool = Field(description="Some listed incident came from the simulator.")
    incidents: list[IncidentOut]


class WeatherObservationOut(BaseModel):
    station_id: str
    observed_at: datetime
    temperature_c: float | None
    precipitation_mm: float | None
    visibility_km: float | None
    source: str
    is_synthetic: bool
    age_minutes: float | None = Field(
        description="Minutes between the observation and `as_of`; null without a clock."
    )


class WeatherNow(BaseModel):
    as_of: datetime | None = Field(description="Event time of the service's clock (as above).")
    synthetic: bool = Field(description="Some observation came from the simulator.")
    observations: list[WeatherObservationOut] = Field(
        description="The newest observation of each station, stations by name."
    )
