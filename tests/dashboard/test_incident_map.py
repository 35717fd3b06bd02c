"""Incidents on the live map: a marker at the incident's sensor, titled with what it is (and
SYNTHETIC when simulated), the stretch it affects drawn along the road links, on both maps."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from dashboard_helpers import real_network

from dashboard.frames import live_sensor_frame
from dashboard.map_layers import NOW, network_deck
from dashboard.sensor_map import layout, network_svg
from serving.schemas import IncidentOut


def incident(sensor_id: str, reach: dict[str, int | None], synthetic: bool) -> IncidentOut:
    return IncidentOut.model_validate(
        {
            "incident_id": f"INC-{sensor_id}",
            "status": "active",
            "sensor_id": sensor_id,
            "latitude": 34.0,
            "longitude": -118.0,
            "start_time": "2012-03-06T07:30:00Z",
            "end_time": None,
            "severity": "MAJOR",
            "affected_sensors": [],
            "reach": reach,
            "source": "synthetic",
            "is_synthetic": synthetic,
        }
    )


def test_each_incident_has_a_marker_at_its_sensor_and_a_stretch_along_the_road() -> None:
    network = real_network()
    frame = live_sensor_frame(network)
    at = next(s for s in network if s.downstream)
    reach = {at.sensor_id: 0, at.downstream[0]: -1}
    incidents = [
        incident(at.sensor_id, reach, synthetic=True),
        incident("not-on-this-network", {}, synthetic=False),
    ]
    svg = ET.fromstring(network_svg(frame, network, NOW, incidents))
    (marker,) = svg.iterfind("./g[@class='incidents']/path")
    assert marker.get("data-incident") == f"INC-{at.sensor_id}"
    title = marker.findtext("title") or ""
    assert title.startswith(f"Incident INC-{at.sensor_id}: major at sensor {at.sensor_id}")
    assert title.endswith("(SYNTHETIC)")
    x, y = layout(frame)[0][at.sensor_id]
    assert marker.get("d", "").startswith(f"M{x} {y - 15:.1f}")
    (stretch,) = svg.iterfind("./g[@class='stretches']/path")
    assert stretch.get("d", "").count("M") == 1  # the one road link between the two sensors
    assert not list(svg.iterfind("./g[@class='incidents']/path[@data-incident='INC-x']"))


def test_without_incidents_the_map_is_unchanged_and_deck_gl_draws_them_too() -> None:
    network = real_network()
    frame = live_sensor_frame(network)
    svg = ET.fromstring(network_svg(frame, network, NOW))
    assert not list(svg.iterfind("./g[@class='incidents']/path"))
    at = network[0].sensor_id
    deck = network_deck(frame, NOW, None, heat=False, incidents=[incident(at, {at: 0}, True)])
    assert [layer.id for layer in deck.layers] == ["incident-stretch", "sensors", "incidents"]
