"""Congestion alerts: a sensor forecast to enter a worse class raises one alert, and it is
cleared once the forecast recovers. A Schmitt trigger keeps them from flapping: the class
only worsens when the forecast is `margin` mph past a threshold, and only recovers when it is
`margin` mph back on the other side, so a forecast hovering at 35 mph alerts once. A withheld
forecast (null, with a reason: `serving.plausibility`) has no class, so it neither raises
nor clears an alert; the sensor keeps its alerted class until a served forecast moves it.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.forecasting import ForecastSnapshot, mph, utc
from traffic_core.windows import CONGESTED, FREE_FLOW, SEVERE, CongestionThresholds

CLASSES = (FREE_FLOW, CONGESTED, SEVERE)


@dataclass(frozen=True)
class Hysteresis:
    thresholds: CongestionThresholds
    margin_mph: float

    def rank(self, speeds: np.ndarray, shift: float) -> np.ndarray:
        """Class rank with both thresholds moved by `shift` mph (-1 where unknown)."""
        rank = np.full(speeds.shape, -1)
        known = ~np.isnan(speeds)
        rank[known] = np.where(
            speeds[known] < self.thresholds.severe_below + shift,
            2,
            np.where(speeds[known] < self.thresholds.free_flow_from + shift, 1, 0),
        )
        return rank


class AlertTracker:
    """Per sensor, the alerted class follows the forecast at one horizon with hysteresis."""

    def __init__(
        self,
        thresholds: CongestionThresholds,
        horizon_minutes: int = 30,
        margin_mph: float = 2.0,
        history: int = 5_000,
    ) -> None:
        self.hysteresis = Hysteresis(thresholds, margin_mph)
        self.horizon = horizon_minutes
        self._state: dict[str, int] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)

    def update(self, snapshot: ForecastSnapshot) -> list[dict[str, Any]]:
        """Alerts (Alert bodies) caused by this snapshot, oldest state first per sensor."""
        point = snapshot.point[self.horizon]
        worse = self.hysteresis.rank(point, -self.hysteresis.margin_mph)
        better = self.hysteresis.rank(point, +self.hysteresis.margin_mph)
        observed = self.hysteresis.rank(snapshot.observed, 0.0)
        alerts = []
        for i, sensor in enumerate(snapshot.sensor_ids):
            state = self._state.get(sensor)
            if state is None:  # first sight: start from what the sensor shows now
                if observed[i] >= 0:
                    self._state[sensor] = int(observed[i])
                continue
            if worse[i] > state:
                new, kind = int(worse[i]), "raised"
            elif 0 <= better[i] < state:
                new, kind = int(better[i]), "cleared"
            else:
                continue
            self._state[sensor] = new
            alerts.append(self._alert(snapshot, i, kind, state, new))
        self.recent.extend(alerts)
        return alerts

    def _alert(
        self, snapshot: ForecastSnapshot, i: int, kind: str, old: int, new: int
    ) -> dict[str, Any]:
        horizon = snapshot.horizon(snapshot.sensor_ids[i], self.horizon)
        return {
            "alert_id": uuid.uuid4().hex,
            "kind": kind,
            "sensor_id": snapshot.sensor_ids[i],
            "raised_at": utc(snapshot.issued_for),
            "target_time": horizon["target_time"],
            "horizon_minutes": self.horizon,
            "from_congestion": CLASSES[old],
            "to_congestion": CLASSES[new],
            "forecast_speed_mph": mph(snapshot.point[self.horizon][i]),
            "model_version": snapshot.model_version,
            "synthetic": snapshot.synthetic,
        }

    def query(
        self,
        sensor_id: str | None = None,
        kind: str | None = None,
        since: Any = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first, filtered."""
        out = []
        for alert in reversed(self.recent):
            if sensor_id is not None and alert["sensor_id"] != sensor_id:
                continue
            if kind is not None and alert["kind"] != kind:
                continue
            if since is not None and alert["raised_at"] < since:
                continue
            out.append(alert)
            if len(out) >= limit:
                break
        return out
