"""The API's engine: live windows from Kafka, the served model, and what happens when a window
closes — forecast every sensor, keep the snapshot, update alerts, push to subscribers and
Kafka. Routes only read what this holds."""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd

from serving.alerts import AlertTracker
from serving.forecasting import ForecastSnapshot, forecast_all, mph, utc
from serving.live import LiveConsumer, LiveWindows
from serving.live.context import Incident, IncidentBook, IncidentReach, WeatherBoard
from serving.live.context_consumer import incident_consumer, weather_consumer
from serving.model_runtime import ModelHolder
from serving.settings import ApiSettings
from serving.streams import Broadcaster, KafkaPublisher
from traffic_core.datasets import SensorGraph
from traffic_core.features import LOOKBACK, profile_at
from traffic_core.model_bundle import ModelBundle
from traffic_core.windows import DEFAULT_THRESHOLDS, WINDOW, CongestionThresholds

log = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """Forecasts cannot be served yet; the message says why and what to do (503)."""


class ForecastService:
    def __init__(
        self,
        settings: ApiSettings,
        graph: SensorGraph,
        holder: ModelHolder,
        broadcaster: Broadcaster,
        publisher: KafkaPublisher | None = None,
        thresholds: CongestionThresholds = DEFAULT_THRESHOLDS,
    ) -> None:
        self.settings = settings
        self.graph = graph
        self.holder = holder
        self.broadcaster = broadcaster
        self.publisher = publisher
        self.thresholds = thresholds
        self.live = LiveWindows(graph.sensor_ids, hours=settings.live_hours)
        self.consumer = (
            LiveConsumer(
                settings.kafka_bootstrap_servers,
                settings.events_topic,
                self.live,
                on_close=self.on_close,
                rebuild_hours=settings.rebuild_hours,
                group_id=settings.consumer_group(),
            )
            if settings.live
            else None
        )
        self.incidents = IncidentBook(
            IncidentReach(graph, settings.incident_hops),
            open_for=timedelta(hours=settings.incident_open_hours),
            recent_for=timedelta(hours=settings.incident_recent_hours),
            max_incidents=settings.max_incidents,
        )
        self.weather = WeatherBoard()
        self.context_consumers = (
            [
                incident_consumer(
                    settings.kafka_bootstrap_servers,
                    settings.incidents_topic,
                    graph.sensor_ids,
                    self.incidents.apply,
                    self.on_incidents,
                    group_id=f"{settings.consumer_group()}-incidents",
                ),
                weather_consumer(
                    settings.kafka_bootstrap_servers,
                    settings.weather_topic,
                    self.weather.apply,
                    group_id=f"{settings.consumer_group()}-weather",
                ),
            ]
            if settings.live and settings.context
            else []
        )
        self.alerts = AlertTracker(
            thresholds,
            settings.alert_horizon_minutes,
            settings.alert_margin_mph,
            settings.alert_history,
        )
        self._snapshots: OrderedDict[pd.Timestamp, ForecastSnapshot] = OrderedDict()
        self._keep = int(pd.Timedelta(hours=settings.history_hours) / WINDOW)
        self._latest: ForecastSnapshot | None = None
        self._lock = threading.Lock()
        holder.on_swap(self.on_model)

    def start(self) -> None:
        self.holder.start()
        if self.publisher is not None:
            self.publisher.start()
        for context in self.context_consumers:
            context.start()
        if self.consumer is not None:
            self.consumer.start()

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
        for context in self.context_consumers:
            context.stop()
        self.holder.stop()
        if self.publisher is not None:
            self.publisher.close()

    @property
    def live_ready(self) -> bool:
        return self.consumer is None or self.consumer.ready

    def reason(self) -> str | None:
        """Why forecasts cannot be served now, or None."""
        if (why := self.holder.reason()) is not None:
            return why
        if not self.live_ready:
            return "rebuilding live state from Kafka"
        if self.publisher is not None and not self.publisher.settled:
            return "joining the forecast publishers' group on Kafka"
        closed = self.live.latest_closed()
        if self._latest is not None and closed is not None and self._latest.issued_for < closed:
            return "forecasting the windows read from Kafka"
        if self._latest is None:
            return (
                f"no live readings yet on {self.settings.events_topic}: start the producer "
                "(make demo does)"
            )
        return None

    def snapshot(self) -> ForecastSnapshot:
        """The newest forecasts, or NotReady with the reason."""
        latest = self._latest
        if latest is None or not self.live_ready:
            raise NotReady(self.reason() or "no forecasts yet")
        return latest

    # --- producing forecasts -------------------------------------------------------------

    def on_close(self, windows: Sequence[pd.Timestamp]) -> None:
        """Called on the consumer thread after `windows` closed (oldest first). Each gets a
        snapshot (the history needs them); only the newest is pushed, so the burst of
        windows a rebuild closes at once does not replay old forecasts and alerts.

        Then everything alive is moved out of the cyclic collector's sight (`gc.freeze`): the
        snapshots, live windows and model sessions are long-lived, and full collections over
        them paused requests for 60-140 ms. Kept objects have no reference cycles, so they are
        still freed by reference counting when history drops them."""
        bundle = self.holder.current
        if bundle is None or not windows:
            return
        snapshots = [self._forecast(bundle, window) for window in windows]
        if snapshots[-1] is not None and self.live_ready:
            self._push(snapshots[-1])
        gc.freeze()

    def on_model(self, bundle: ModelBundle) -> None:
        """A new version: forecast the newest window again so answers carry it at once (the
        history keeps the forecasts made when that window closed)."""
        window = self.live.latest_closed()
        if window is not None:
            self._forecast(bundle, window)
        gc.collect()  # the old sessions and snapshots' cycles; a swap is rare
        gc.freeze()

    def _forecast(self, bundle: ModelBundle, window: pd.Timestamp) -> ForecastSnapshot | None:
        with self._lock:
            speeds = self.live.speeds(end=window, steps=LOOKBACK)
            if speeds.empty:
                return None
            sources = self.live.sources(
                window, bundle.context.sensor_ids, self.settings.events_topic, LOOKBACK
            )
            snapshot = forecast_all(
                bundle,
                speeds,
                window,
                self.live.is_synthetic,
                self.thresholds,
                sources,
                held_from=self.live.held_from(),
                incidents=self.incidents.flags(utc(window + WINDOW)),
            )
            # history keeps what was made when the window closed; a model swap's forecast of
            # the same window only changes what is served from now on
            self._snapshots.setdefault(window, snapshot)
            while len(self._snapshots) > self._keep:
                self._snapshots.popitem(last=False)
            if self._latest is None or window >= self._latest.issued_for:
                self._latest = snapshot
            return snapshot

    def on_incidents(self) -> None:
        """Incidents changed: the newest forecasts are served with the flags as they are now
        (the history keeps the flags each window closed with). Re-encodes one snapshot; the
        incidents' reach is precomputed, so this is cheap and incidents are rare."""
        with self._lock:
            latest = self._latest
            if latest is not None:
                flags = self.incidents.flags(utc(latest.issued_for + WINDOW))
                self._latest = dataclasses.replace(latest, incidents=flags)

    def _push(self, snapshot: ForecastSnapshot) -> None:
        alerts = self.alerts.update(snapshot)
        self.broadcaster.publish("forecasts", snapshot.batch_json(None))
        for alert in alerts:
            self.broadcaster.publish("alert", alert)
        if self.publisher is not None:
            self.publisher.send(
                self.publisher.predictions_topic,
                ((s, snapshot.one_json(s)) for s in snapshot.sensor_ids),
            )
            self.publisher.send(
                self.publisher.alerts_topic,
                ((a["sensor_id"], orjson.dumps(a)) for a in alerts),
            )

    # --- reading state -------------------------------------------------------------------

    def _recent(self, hours: float) -> pd.DataFrame:
        end = self.live.latest_closed()
        if end is None:
            return pd.DataFrame(columns=self.graph.sensor_ids, dtype="float64")
        steps = max(1, int(pd.Timedelta(hours=hours) / WINDOW))
        return self.live.speeds(end=end, steps=steps)

    def network_status(self) -> dict[str, Any]:
        recent = self._recent(5 / 60)
        speeds = (
            recent.iloc[-1].to_numpy(dtype="float64")
            if len(recent)
            else np.full(len(self.graph), np.nan)
        )
        classes = self.thresholds.classify(speeds)
        counts = {
            c: int((classes == c).sum()) for c in ("free_flow", "congested", "severe", "unknown")
        }
        locations = self.graph.locations
        reporting = ~np.isnan(speeds)
        return {
            "as_of": utc(recent.index[-1]) if len(recent) else None,
            "synthetic": self.live.is_synthetic,
            "sensors_total": len(self.graph),
            "sensors_reporting": int(reporting.sum()),
            "average_speed_mph": mph(float(np.mean(speeds[reporting])))
            if reporting.any()
            else None,
            "counts": counts,
            "sensors": [
                {
                    "sensor_id": sensor,
                    "latitude": float(locations.iloc[i]["latitude"]),
                    "longitude": float(locations.iloc[i]["longitude"]),
                    "speed_mph": mph(speeds[i]),
                    "congestion": classes[i],
                }
                for i, sensor in enumerate(self.graph.sensor_ids)
            ],
        }

    def network_history(self, hours: float) -> dict[str, Any]:
        recent = self._recent(hours)
        values = recent.to_numpy(dtype="float64")
        classes = self.thresholds.classify(values.ravel()).reshape(values.shape)
        points = []
        for row, stamp in enumerate(recent.index):
            valid = ~np.isnan(values[row])
            points.append(
                {
                    "window_start": utc(stamp),
                    "average_speed_mph": mph(float(values[row][valid].mean()))
                    if valid.any()
                    else None,
                    "sensors_reporting": int(valid.sum()),
                    "congested": int((classes[row] == "congested").sum()),
                    "severe": int((classes[row] == "severe").sum()),
                }
            )
        return {"synthetic": self.live.is_synthetic, "points": points}

    def sensor_history(self, sensor_id: str, hours: float) -> dict[str, Any]:
        recent = self._recent(hours)
        bundle = self.holder.current
        observed = recent[sensor_id] if sensor_id in recent.columns else pd.Series(dtype=float)
        typical = (
            profile_at(bundle.context.profile[[sensor_id]], pd.DatetimeIndex(recent.index))[:, 0]
            if bundle is not None and sensor_id in bundle.context.profile.columns
            else np.full(len(recent), np.nan)
        )
        snapshots = dict(self._snapshots)
        points = []
        for row, stamp in enumerate(recent.index):
            forecasts: dict[str, Any] = {}
            for minutes in (15, 30, 60):
                made = snapshots.get(stamp - minutes // 5 * WINDOW)
                forecasts[str(minutes)] = (
                    made.horizon(sensor_id, minutes) if made and sensor_id in made else None
                )
            points.append(
                {
                    "window_start": utc(stamp),
                    "observed_speed_mph": mph(observed.iloc[row]) if len(observed) else None,
                    "forecasts": forecasts,
                    "typical_speed_mph": mph(typical[row]),
                }
            )
        return {
            "sensor_id": sensor_id,
            "model_version": bundle.version if bundle else None,
            "synthetic": self.live.is_synthetic,
            "points": points,
        }

    # --- incidents and weather -----------------------------------------------------------

    def clock(self) -> datetime | None:
        """The service's event time: the newest closed window's end; before any reading, the
        newest incident start or weather observation (a replay of 2012 runs on 2012 time)."""
        closed = self.live.latest_closed()
        if closed is not None:
            return utc(closed + WINDOW)
        known = [t for t in (self.incidents.newest_start, self.weather.newest()) if t]
        return max(known, default=None)

    def incident_listing(
        self,
        statuses: frozenset[str],
        sensor_id: str | None = None,
        synthetic: bool | None = None,
    ) -> dict[str, Any]:
        """IncidentList: incidents of those statuses at the clock, optionally only those
        reaching `sensor_id` or of one origin."""
        at = self.clock()
        listed = self.incidents.listing(at) if at is not None else []
        rows = [
            self._incident_row(incident, status)
            for incident, status in listed
            if status in statuses
            and (sensor_id is None or sensor_id in incident.reach)
            and (synthetic is None or incident.is_synthetic == synthetic)
        ]
        return {
            "as_of": at,
            "synthetic": any(r["is_synthetic"] for r in rows),
            "incidents": rows,
        }

    def _incident_row(self, incident: Incident, status: str) -> dict[str, Any]:
        place = self.graph.locations.iloc[self.graph.index_of(incident.sensor_id)]
        return {
            "incident_id": incident.incident_id,
            "status": status,
            "sensor_id": incident.sensor_id,
            "latitude": float(place["latitude"]),
            "longitude": float(place["longitude"]),
            "start_time": incident.start_time,
            "end_time": incident.end_time,
            "severity": incident.severity,
            "affected_sensors": [s for s in incident.affected_sensors if s in incident.reach],
            "reach": dict(incident.reach),
            "source": incident.source,
            "is_synthetic": incident.is_synthetic,
        }

    def weather_now(self, station_id: str | None = None) -> dict[str, Any]:
        """WeatherNow: each station's newest observation and its age at the clock."""
        at = self.clock()
        rows = [
            {
                **record,
                "age_minutes": None
                if at is None
                else round((at - record["observed_at"]) / timedelta(minutes=1), 1),
            }
            for record in self.weather.latest()
            if station_id is None or record["station_id"] == station_id
        ]
        return {
            "as_of": at,
            "synthetic": any(r["is_synthetic"] for r in rows),
            "observations": rows,
        }
