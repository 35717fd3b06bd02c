"""The live map's SVG drawing: every sensor where it is, coloured as the deck.gl map colours it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from dashboard_helpers import batch_for, real_network, sensor

from dashboard.congestion import hex_colour
from dashboard.frames import live_sensor_frame
from dashboard.map_layers import NOW
from dashboard.sensor_map import RADIUS, layout, mercator, network_svg, right_of_travel


def parsed(frame: pd.DataFrame, network: list, minutes: int) -> ET.Element:
    return ET.fromstring(network_svg(frame, network, minutes))


def circles_by_id(svg: ET.Element) -> dict[str, dict[str, str]]:
    return {c.get("data-id"): c.attrib for c in svg.iter("circle")}


def test_the_real_network_puts_every_sensor_inside_the_view_north_up() -> None:
    network = real_network()
    svg = parsed(live_sensor_frame(network), network, NOW)
    _, _, width, height = map(float, svg.get("viewBox").split())
    circles = circles_by_id(svg)
    assert sorted(circles) == sorted(s.sensor_id for s in network)
    xy = {k: (float(c["cx"]), float(c["cy"])) for k, c in circles.items()}
    assert all(0 < x < width and 0 < y < height for x, y in xy.values())
    north = max(network, key=lambda s: s.latitude).sensor_id
    east = max(network, key=lambda s: s.longitude).sensor_id
    assert xy[north][1] == min(y for _, y in xy.values())
    assert xy[east][0] == max(x for x, _ in xy.values())
    assert svg.get("aria-label") == "Map of 207 sensors coloured by congestion"


def test_each_sensor_links_to_its_strongest_neighbour_each_way_once() -> None:
    network = [
        sensor("a", [], ["b", "c"], -118.00),  # a-c is weaker than a-b: not drawn
        sensor("b", ["a"], ["c", "a"], -118.01),
        sensor("c", ["b", "a"], ["gone"], -118.02),  # a sensor the map does not know
        sensor("d", ["d"], [], -118.03),  # a self-link draws nothing
    ]
    svg = parsed(live_sensor_frame(network), network, NOW)
    road = next(svg.iter("path")).get("d")
    where = {k: (c["cx"], c["cy"]) for k, c in circles_by_id(svg).items()}
    segments = {tuple(part.replace("L", " ").split()) for part in road.split("M")[1:]}
    assert segments == {(*where["a"], *where["b"]), (*where["b"], *where["c"])}


def test_both_carriageways_at_one_spot_sit_right_of_their_travel() -> None:
    network = [
        sensor("west", [], ["east-bound"], -118.02),
        sensor("east-bound", ["west"], ["east"], -118.01),
        sensor("west-bound", [], ["east-bound", "west"], -118.01),  # its twin links first
        sensor("east", ["east-bound"], [], -118.00),
        sensor("alone", [], [], -117.90),
    ]
    frame = live_sensor_frame(network)
    where, _ = layout(frame)
    assert where["east-bound"] == where["west-bound"]
    sides = right_of_travel(network, where)
    assert sides["east-bound"] == pytest.approx((0.0, 1.0))  # heading east: right is south
    assert sides["west-bound"] == pytest.approx((0.0, -1.0))
    assert sides["alone"] == (0.0, 0.0)
    circle = circles_by_id(parsed(frame, network, NOW))["west-bound"]
    assert circle["style"] == "--ox:0.00;--oy:-1.00"


def test_the_real_networks_twins_no_longer_hide_each_other() -> None:
    network = real_network()
    where, _ = layout(live_sensor_frame(network))
    sides = right_of_travel(network, where)
    ids = list(where)
    shown = np.array([where[i] for i in ids]) + RADIUS * np.array([sides[i] for i in ids])
    gaps = np.hypot(*(shown[:, None] - shown[None]).transpose(2, 0, 1))
    np.fill_diagonal(gaps, np.inf)
    hidden = int((gaps.min(axis=1) < 1.0).sum())
    assert hidden <= 10  # 84 of the 207 without the shift


def test_fill_follows_the_chosen_view_and_the_ring_stays_on_now() -> None:
    network = [sensor("a", [], [], -118.0), sensor("b", [], [], -118.1)]
    frame = live_sensor_frame(network, batch=batch_for("a"))
    ahead = parsed(frame, network, 15)
    a = circles_by_id(ahead)["a"]
    assert (a["fill"], a["stroke"]) == (hex_colour("severe"), hex_colour("congested"))
    assert a["data-now"] == "50 mph (Congested)"
    assert a["data-view"] == "30 mph (Severe)"
    assert a["data-interval"] == "25 to 35 mph"
    assert ahead.get("data-view-title") == "In 15 min"
    b = circles_by_id(ahead)["b"]
    unknown = (hex_colour("unknown"), "no reading", "—")
    assert (b["fill"], b["data-view"], b["data-interval"]) == unknown
    now = circles_by_id(parsed(frame, network, NOW))["a"]
    assert now["fill"] == now["stroke"] == hex_colour("congested")


def test_odd_sensor_ids_are_escaped_and_one_sensor_still_draws() -> None:
    network = [sensor('7"<&>', [], [])]
    svg = parsed(live_sensor_frame(network), network, NOW)
    (circle,) = svg.iter("circle")
    assert circle.get("data-id") == '7"<&>'
    _, _, width, height = map(float, svg.get("viewBox").split())
    assert 0 < float(circle.get("cx")) < width and 0 < float(circle.get("cy")) < height


def test_mercator_matches_the_tile_grid() -> None:
    # Los Angeles City Hall lies in OpenStreetMap's tile 10/175/408.
    x, y = mercator(pd.Series([34.0537]), pd.Series([-118.2428]))
    assert (int(x.iat[0] * 2**10), int(y.iat[0] * 2**10)) == (175, 408)
