"""One colour and label per congestion class, shared by the map, the charts and the PDF."""

from __future__ import annotations

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


def hex_colour(congestion: str) -> str:
    r, g, b = RGB.get(congestion, RGB["unknown"])
    return f"#{r:02x}{g:02x}{b:02x}"
