"""The live network map as a pydeck Deck: sensors coloured by congestion plus a heat layer.

The basemap is a MapLibre style passed as a data: URL. Without configured tiles it is a plain
background, so the map draws offline and the browser never calls a tile server (Streamlit would
otherwise fill in a Carto basemap); with TRAFFIC_DASHBOARD_TILES it is that raster source.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from urllib.parse import quote

import pandas as pd
import pydeck as pdk

from dashboard.congestion import LABELS, RGB
from serving.schemas import IncidentOut

NOW = 0
"""The view `minutes` of the current observation; 15/30/60 show forecasts that far ahead."""

TOOLTIP_HORIZON = 15
"""The forecast the tooltip shows while the map colours the present."""

FREE_FLOW_MPH = 65.0
"""Heat weight is the speed deficit below this, so the heat shows where traffic is slowest."""

TOOLTIP = {
    "html": "<b>Sensor {sensor_id}</b><br/>Now: {now_text}<br/>{view_title}: {view_text}"
    "<br/>Interval: {interval_text}",
    "style": {"fontSize": "13px"},
}


def basemap_style(tiles: str | None) -> str:
    """A data: URL holding a MapLibre style: background only, or background plus raster tiles."""
    layers: list[dict[str, object]] = [
        {"id": "background", "type": "background", "paint": {"background-color": "#eef0f3"}}
    ]
    sources: dict[str, object] = {}
    if tiles:
        sources["basemap"] = {"type": "raster", "tiles": [tiles], "tileSize": 256}
        layers.append({"id": "basemap", "type": "raster", "source": "basemap"})
    style = {"version": 8, "sources": sources, "layers": layers}
    return "data:application/json," + quote(json.dumps(style, separators=(",", ":")))


def _speed_text(
    speeds: pd.Series, classes: pd.Series, reasons: pd.Series | None = None
) -> list[str]:
    """A speed with its class; a withheld forecast says why (e.g. "withheld: warming up")."""
    why = reasons if reasons is not None else pd.Series(None, index=speeds.index, dtype=object)
    return [
        (f"withheld: {r.replace('_', ' ')}" if isinstance(r, str) else "no reading")
        if pd.isna(s)
        else f"{s:.0f} mph ({LABELS.get(c, c)})"
        for s, c, r in zip(speeds, classes, why, strict=True)
    ]


def map_points(frame: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """The columns the layers and the tooltip read, for the chosen view (no NaN: JSON-safe).

    Colour and heat follow the view; the tooltip always shows the speed now and a forecast
    with its interval (the 15-minute one while the map shows the present).
    """
    ahead = TOOLTIP_HORIZON if minutes == NOW else minutes
    forecast = frame[f"f{ahead}_speed"]
    forecast_class = _known(frame[f"f{ahead}_congestion"])
    if minutes == NOW:
        speed, congestion = frame["observed_speed"], _known(frame["observed_congestion"])
    else:
        speed, congestion = forecast, forecast_class
    interval = [
        "—" if pd.isna(lo) or pd.isna(hi) else f"{lo:.0f} to {hi:.0f} mph"
        for lo, hi in zip(frame[f"f{ahead}_lower"], frame[f"f{ahead}_upper"], strict=True)
    ]
    return pd.DataFrame(
        {
            "sensor_id": frame["sensor_id"],
            "position": list(zip(frame["longitude"], frame["latitude"], strict=True)),
            "fill": [[*RGB[c], 230] for c in congestion],
            "line": [list(RGB[c]) for c in _known(frame["observed_congestion"])],
            "weight": (FREE_FLOW_MPH - speed).clip(lower=0).fillna(0.0).round(1),
            "now_text": _speed_text(frame["observed_speed"], frame["observed_congestion"]),
            "view_title": f"In {ahead} min",
            "view_text": _speed_text(forecast, forecast_class, frame[f"f{ahead}_reason"]),
            "interval_text": interval,
        }
    )


def _known(classes: pd.Series) -> pd.Series:
    return classes.where(classes.isin(list(RGB)), "unknown")


INCIDENT_RGB = [185, 28, 28]


def incident_layers(frame: pd.DataFrame, incidents: Sequence[IncidentOut]) -> list[pdk.Layer]:
    """Each incident's affected stretch (its reached sensors ringed in red) and its marker."""
    if not incidents:
        return []
    place = dict(
        zip(
            frame["sensor_id"], zip(frame["longitude"], frame["latitude"], strict=True), strict=True
        )
    )
    reached = [{"position": place[s]} for i in incidents for s in i.reach if s in place]
    markers = [
        {"position": place[i.sensor_id], "label": i.incident_id}
        for i in incidents
        if i.sensor_id in place
    ]
    return [
        pdk.Layer(
            "ScatterplotLayer",
            data=reached,
            id="incident-stretch",
            get_position="position",
            filled=False,
            stroked=True,
            get_line_color=[*INCIDENT_RGB, 140],
            line_width_min_pixels=3,
            radius_min_pixels=9,
            get_radius=400,
        ),
        pdk.Layer(
            "ScatterplotLayer",
            data=markers,
            id="incidents",
            get_position="position",
            get_fill_color=[*INCIDENT_RGB, 240],
            get_line_color=[255, 255, 255],
            stroked=True,
            line_width_min_pixels=2,
            radius_min_pixels=8,
            get_radius=500,
        ),
    ]


def network_deck(
    frame: pd.DataFrame,
    minutes: int,
    tiles: str | None,
    heat: bool = True,
    incidents: Sequence[IncidentOut] = (),
) -> pdk.Deck:
    """Sensors filled by the chosen view's congestion and ringed by the current one, with
    active incidents and their stretches."""
    points = map_points(frame, minutes)
    stretch_and_markers = incident_layers(frame, incidents)
    layers = stretch_and_markers[:1]
    if heat:
        layers.append(
            pdk.Layer(
                "HeatmapLayer",
                data=points[["position", "weight"]],
                id="heat",
                get_position="position",
                get_weight="weight",
                radius_pixels=40,
                opacity=0.45,
                pickable=False,
            )
        )
    layers.append(
        pdk.Layer(
            "ScatterplotLayer",
            data=points,
            id="sensors",
            get_position="position",
            get_fill_color="fill",
            get_line_color="line",
            stroked=True,
            line_width_min_pixels=2,
            radius_min_pixels=5,
            radius_max_pixels=14,
            get_radius=250,
            pickable=True,
        )
    )
    layers += stretch_and_markers[1:]  # markers on top of the sensors
    return pdk.Deck(
        layers=layers,
        initial_view_state=view_of(frame),
        map_style=basemap_style(tiles),
        map_provider=None,
        tooltip=TOOLTIP,
    )


def view_of(frame: pd.DataFrame, width_px: int = 900, height_px: int = 520) -> pdk.ViewState:
    """Centre and Web-Mercator zoom that fit every sensor into a map of about that size, so
    another network (PEMS-BAY) is framed as well as METR-LA. deck.gl draws the world 512 px
    wide at zoom 0."""
    lat, lon = frame["latitude"], frame["longitude"]
    centre = (lat.min() + lat.max()) / 2
    span_lon = max(lon.max() - lon.min(), 0.01)
    span_lat = max(lat.max() - lat.min(), 0.01)
    zoom = min(
        math.log2(width_px * 360 / (512 * span_lon)),
        math.log2(height_px * 360 * math.cos(math.radians(centre)) / (512 * span_lat)),
    )
    return pdk.ViewState(
        latitude=float(centre),
        longitude=float((lon.min() + lon.max()) / 2),
        zoom=round(min(zoom, 15.0), 2),
        pitch=0,
    )
