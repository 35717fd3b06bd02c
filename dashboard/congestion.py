"""One colour and label per congestion class, shared by the map, the charts and the PDF."""

from __future__ import annotations

from collections.abc import Sequence

from serving.schemas import CongestionChances

CLASSES = ("free_flow", "congested", "severe", "unknown")

LABELS = {
    "free_flow": "Free flow",
    "congested": "Congested",
    "severe": "Severe",
    "unknown": "No reading",
}

RGB = {
    "free_flow": (26, 150, 65),
    "congested": (245, 150, 40),
    "severe": (215, 25, 28),
    "unknown": (150, 150, 150),
}


def rgb_hex(rgb: Sequence[int]) -> str:
    """`#rrggbb` of an RGB or RGBA triple (alpha dropped)."""
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def hex_colour(congestion: str) -> str:
    return rgb_hex(RGB.get(congestion, RGB["unknown"]))


def chance_text(minutes: int, chances: CongestionChances | None) -> str | None:
    """ "70% chance of congestion in 30 minutes" (congested or severe), with the severe share
    when it is 5% or more; None without probabilities (withheld, or an older model)."""
    if chances is None:
        return None
    slow = chances.congested + chances.severe
    text = f"{slow:.0%} chance of congestion in {minutes} minutes"
    return f"{text} ({chances.severe:.0%} severe)" if chances.severe >= 0.05 else text
