"""A reliability diagram as a PNG, drawn with Pillow (already installed with reportlab), so
the bench needs no plotting library: one panel per congestion class, mean forecast
probability per bin against how often the class happened, dot area by forecast count."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from dashboard.congestion import LABELS, RGB

PANEL, MARGIN = 300, 40


def draw(table: pd.DataFrame, title: str, path: Path) -> Path:
    """`table` as `traffic_core.evaluation.probabilistic.reliability_table` gives it, plus a
    `horizon` column: one row of panels per horizon, one column per class."""
    horizons = sorted(table["horizon"].unique())
    classes = list(dict.fromkeys(table["class"]))
    width = len(classes) * (PANEL + MARGIN) + MARGIN
    height = len(horizons) * (PANEL + MARGIN) + 2 * MARGIN
    image = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(image)
    pen.text((MARGIN, 10), title, fill="black")
    largest = max(int(table["forecasts"].max()), 1)
    for row, horizon in enumerate(horizons):
        for col, name in enumerate(classes):
            left, top = MARGIN + col * (PANEL + MARGIN), 2 * MARGIN + row * (PANEL + MARGIN)

            def at(x: float, y: float, left: int = left, top: int = top) -> tuple[float, float]:
                return left + x * PANEL, top + (1 - y) * PANEL

            pen.rectangle([at(0, 1), at(1, 0)], outline="black")
            pen.line([at(0, 0), at(1, 1)], fill=(160, 160, 160))
            pen.text((left, top - 14), f"{LABELS[name]}, {horizon} min", fill="black")
            part = table[(table["horizon"] == horizon) & (table["class"] == name)]
            points = [
                at(p, o)
                for p, o in zip(part["mean_probability"], part["observed_rate"], strict=True)
            ]
            if len(points) > 1:
                pen.line(points, fill=RGB[name], width=2)
            for (x, y), n in zip(points, part["forecasts"], strict=True):
                r = 2 + 8 * (n / largest) ** 0.5
                pen.ellipse([x - r, y - r, x + r, y + r], fill=RGB[name])
            for tick in (0.0, 0.5, 1.0):
                pen.text(at(tick, 0), f"{tick:g}", fill="black", anchor="mt")
                pen.text(at(0, tick), f"{tick:g} ", fill="black", anchor="rm")
            pen.text(at(0.35, -0.06), "forecast probability", fill="black")
            pen.text(at(0.01, 0.97), "observed rate", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
