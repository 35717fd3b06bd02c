"""The live map's default drawing: every sensor as an SVG circle over the road graph.

Why not deck.gl here: its 2.7 MB script and a software WebGL context (no GPU on a planner's
thin client or in CI) took about a second of a first visit's three. An SVG of 207 circles
draws in milliseconds, needs no tiles and no network, and keeps what planners use: colour by
congestion now or ahead, a ring for the present, a tooltip with speeds and the interval, a
click that picks a sensor, wheel zoom and drag. The heat layer and raster tiles stay on
deck.gl (`dashboard.map_layers`).

The drawing is a Streamlit custom component (`st.components.v2`): it renders in the page, not
in an iframe, and reports the picked sensor back as component state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.components.v2.types import ComponentRenderer

from dashboard.congestion import rgb_hex
from dashboard.map_layers import map_points
from serving.schemas import IncidentOut, SensorInfo

WIDTH = 1000.0
"""viewBox width in map units; the height follows the network's shape."""
PADDING = 20.0
MAX_ASPECT = 0.75
"""Height over width the fitted network may take; a taller network is scaled down to it."""
RADIUS = 6.0
"""Circle radius in map units at the full view (about 5 px in a 900 px wide column)."""
STRONGEST = 1
"""Road links drawn per sensor and direction: only the strongest, which trace the freeways;
the weaker ones of the road-distance kernel cross between roads and hide them."""
TWIN_DISTANCE = 2.0
"""Map units within which two linked sensors count as one spot (both carriageways)."""
MAP_HEIGHT_PX = 560
HERE = Path(__file__).parent


def mercator(latitude: pd.Series, longitude: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Web-Mercator x, y in world units (y grows southwards), as on tiled maps."""
    x = (longitude + 180.0) / 360.0
    y = (1.0 - np.log(np.tan(np.pi / 4 + np.radians(latitude) / 2)) / np.pi) / 2.0
    return x, y


Positions = dict[str, tuple[float, float]]


def layout(frame: pd.DataFrame) -> tuple[Positions, float]:
    """Each sensor's place in map units (north up, the network fitted into WIDTH), and the
    map's height."""
    x, y = mercator(frame["latitude"], frame["longitude"])
    span = max(float(x.max() - x.min()), float(y.max() - y.min()) / MAX_ASPECT, 1e-9)
    scale = (WIDTH - 2 * PADDING) / span
    px = ((x - x.min()) * scale + PADDING).round(1)
    py = ((y - y.min()) * scale + PADDING).round(1)
    where = dict(zip(frame["sensor_id"], zip(px, py, strict=True), strict=True))
    return where, round(float(py.max()) + PADDING, 1)


def road_path(sensors: Sequence[SensorInfo], where: Positions) -> str:
    """SVG path data of each sensor's strongest up- and downstream link, once per pair."""
    links = sorted(
        {
            tuple(sorted((s.sensor_id, other)))
            for s in sensors
            for other in s.downstream[:STRONGEST] + s.upstream[:STRONGEST]
            if s.sensor_id in where and other in where and other != s.sensor_id
        }
    )
    return "".join(f"M{where[a][0]} {where[a][1]}L{where[b][0]} {where[b][1]}" for a, b in links)


def _farther(ids: Sequence[str], here: tuple[float, float], where: Positions) -> str | None:
    """The strongest linked sensor that is not at the same spot (a twin across the median)."""
    return next((i for i in ids if i in where and math.dist(where[i], here) > TWIN_DISTANCE), None)


def right_of_travel(sensors: Sequence[SensorInfo], where: Positions) -> Positions:
    """A unit vector to the right of each sensor's direction of travel, from its upstream to
    its downstream neighbour (screen axes, y down); (0, 0) where the graph does not tell.

    Detectors of the two carriageways share a location; shifted one radius to the right of
    travel, as traffic drives, both are seen instead of one hiding the other.
    """
    sides: Positions = {}
    for s in sensors:
        if s.sensor_id not in where:
            continue
        here = where[s.sensor_id]
        down, up = _farther(s.downstream, here, where), _farther(s.upstream, here, where)
        start, end = where.get(up or "", here), where.get(down or "", here)
        dx, dy = end[0] - start[0], end[1] - start[1]
        length = math.hypot(dx, dy)
        sides[s.sensor_id] = (0.0, 0.0) if length == 0 else (0.0 - dy / length, dx / length)
    return sides


def incident_label(incident: IncidentOut) -> str:
    """What a planner reads on an incident's marker."""
    text = (
        f"Incident {incident.incident_id}: {incident.severity.lower()} at sensor "
        f"{incident.sensor_id}, since {incident.start_time:%H:%M} UTC, "
        f"{len(incident.reach)} sensors affected"
    )
    return f"{text} (SYNTHETIC)" if incident.is_synthetic else text


def incident_svg(
    incidents: Sequence[IncidentOut], sensors: Sequence[SensorInfo], where: Positions
) -> tuple[str, str]:
    """(affected stretches, markers) as SVG: each incident's reach along the road links, and
    a triangle at its sensor, titled with what it is."""
    stretches, markers = [], []
    for incident in incidents:
        if incident.sensor_id not in where:
            continue
        reached = {s: where[s] for s in incident.reach if s in where}
        stretches.append(f'<path class="incident-stretch" d="{road_path(sensors, reached)}"/>')
        x, y = where[incident.sensor_id]
        markers.append(
            f'<path class="incident {escape(incident.severity.lower())}" '
            f'data-incident="{escape(incident.incident_id)}" '
            f'd="M{x} {y - 15:.1f}L{x + 10:.1f} {y + 4:.1f}L{x - 10:.1f} {y + 4:.1f}Z">'
            f"<title>{escape(incident_label(incident))}</title></path>"
        )
    return "".join(stretches), "".join(markers)


def network_svg(
    frame: pd.DataFrame,
    sensors: Sequence[SensorInfo],
    minutes: int,
    incidents: Sequence[IncidentOut] = (),
) -> str:
    """The map as SVG markup: the strongest road-graph links, the stretches incidents affect,
    then one circle per sensor (fill: the view's congestion, ring: congestion now, shifted to
    the right of travel) with its tooltip texts as data attributes, and incident markers on
    top."""
    points = map_points(frame, minutes)
    where, height = layout(frame)
    sides = right_of_travel(sensors, where)
    stretches, markers = incident_svg(incidents, sensors, where)
    view_title = escape(str(points["view_title"].iat[0])) if len(points) else ""
    circles = "".join(
        f'<circle cx="{where[sid][0]}" cy="{where[sid][1]}" r="{RADIUS}" '
        f'style="--ox:{ox:.2f};--oy:{oy:.2f}" fill="{rgb_hex(fill)}" stroke="{rgb_hex(line)}" '
        f'data-id="{escape(sid)}" data-now="{escape(now)}" data-view="{escape(view)}" '
        f'data-interval="{escape(interval)}"/>'
        for sid, fill, line, now, view, interval in zip(
            points["sensor_id"],
            points["fill"],
            points["line"],
            points["now_text"],
            points["view_text"],
            points["interval_text"],
            strict=True,
        )
        for ox, oy in [sides.get(sid, (0.0, 0.0))]
    )
    return (
        f'<svg viewBox="0 0 {WIDTH} {height}" role="img" data-view-title="{view_title}" '
        f'aria-label="Map of {len(points)} sensors coloured by congestion" '
        f'preserveAspectRatio="xMidYMid meet"><path class="road" d="{road_path(sensors, where)}"/>'
        f'<g class="stretches">{stretches}</g><g class="sensors">{circles}</g>'
        f'<g class="incidents">{markers}</g></svg>'
    )


@cache
def _component() -> ComponentRenderer:
    """Registered once per process, on first use."""
    return st.components.v2.component(
        "sensor_map",
        css=(HERE / "sensor_map.css").read_text(),
        js=(HERE / "sensor_map.js").read_text(),
    )


def sensor_map(
    frame: pd.DataFrame,
    sensors: Sequence[SensorInfo],
    minutes: int,
    key: str,
    incidents: Sequence[IncidentOut] = (),
) -> str | None:
    """Draw the map; returns the sensor the planner clicked last, if any."""
    result = _component()(
        key=key,
        data={
            "svg": network_svg(frame, sensors, minutes, incidents),
            "height": MAP_HEIGHT_PX,
            "radius": RADIUS,
        },
        default={"selected": None},
        height=MAP_HEIGHT_PX,
        on_selected_change=lambda: None,
    )
    selected = result.get("selected")
    return str(selected) if selected else None
