"""A printable PDF summary of a report: key figures, two charts, the slowest sensors.

Drawn with reportlab's own graphics so no plotting library is needed on the server.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pandas as pd
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from dashboard.reports.dataset import ReportData, sensor_summary, speed_by_hour, speed_over_time

TITLE = "METR-LA traffic report"
SLOWEST_SENSORS = 20
CHART_WIDTH = 17 * cm
CHART_HEIGHT = 6 * cm
INK = colors.HexColor("#1f2937")
ACCENT = colors.HexColor("#2563eb")


def build_pdf(report: ReportData, generated_at: datetime | None = None) -> bytes:
    """The whole PDF in memory, ready for a download button."""
    generated_at = generated_at or datetime.now(UTC)
    styles = getSampleStyleSheet()
    warning = ParagraphStyle("synthetic", parent=styles["Heading2"], textColor=colors.red)
    rows = report.rows
    req = report.request
    sensors = rows["sensor_id"].nunique()
    story = [
        Paragraph(TITLE, styles["Title"]),
        Paragraph(
            f"{req.start:%d %b %Y} to {req.end:%d %b %Y} &middot; {sensors} sensors &middot; "
            f"source: {report.source_label}",
            styles["Normal"],
        ),
    ]
    if report.synthetic:
        story.append(Paragraph("SYNTHETIC DATA: readings from the traffic simulator.", warning))
    story += [
        Spacer(1, 0.4 * cm),
        _table(_key_figures(rows), header=False),
        Spacer(1, 0.5 * cm),
        Paragraph("Mean speed of the selected sensors", styles["Heading2"]),
        _time_chart(speed_over_time(rows)),
        Paragraph("Mean speed by hour of day (UTC)", styles["Heading2"]),
        _hour_chart(speed_by_hour(rows)),
        Paragraph(f"Slowest sensors (up to {SLOWEST_SENSORS})", styles["Heading2"]),
        _table(_slowest(rows), header=True),
        Spacer(1, 0.5 * cm),
        Paragraph(
            f"Generated {generated_at:%Y-%m-%d %H:%M} UTC. Congestion classes: severe below "
            "35 mph, congested below 60 mph, free flow above.",
            styles["Italic"],
        ),
    ]
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=TITLE,
        author="METR-LA traffic platform",
        leftMargin=2 * cm,
        rightMargin=2 * cm,
        topMargin=1.5 * cm,
        bottomMargin=1.5 * cm,
    )
    doc.build(story)
    return buffer.getvalue()


def _key_figures(rows: pd.DataFrame) -> list[list[str]]:
    congested = rows["congestion"].isin(["congested", "severe"])
    by_hour = speed_by_hour(rows)
    slowest_hour = "n/a" if by_hour.isna().all() else f"{int(by_hour.idxmin()):02d}:00"
    return [
        ["5-minute windows", f"{len(rows):,}"],
        ["Mean speed", _mph(rows["speed_mean"].mean())],
        ["Share congested or severe", f"{congested.mean():.1%}" if len(rows) else "n/a"],
        ["Share severe", f"{(rows['congestion'] == 'severe').mean():.1%}" if len(rows) else "n/a"],
        ["Slowest hour of day", slowest_hour],
    ]


def _slowest(rows: pd.DataFrame) -> list[list[str]]:
    summary = sensor_summary(rows).head(SLOWEST_SENSORS)
    header = ["Sensor", "Windows", "Mean speed", "Min speed", "Congested", "Severe"]
    return [header] + [
        [
            str(r.sensor_id),
            f"{r.windows:,}",
            _mph(r.mean_speed_mph),
            _mph(r.min_speed_mph),
            f"{r.congested_share:.0%}",
            f"{r.severe_share:.0%}",
        ]
        for r in summary.itertuples()
    ]


def _mph(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.1f} mph"


def _table(data: list[list[str]], header: bool) -> Table:
    table = Table(data, hAlign="LEFT")
    style = [
        ("FONTSIZE", (0, 0), (-1, -1), 9),
        ("TEXTCOLOR", (0, 0), (-1, -1), INK),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.lightgrey),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
    ]
    if header:
        style += [
            ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
            ("ALIGN", (0, 0), (-1, 0), "CENTER"),
        ]
    table.setStyle(TableStyle(style))
    return table


def _no_data(drawing: Drawing) -> Drawing:
    drawing.add(
        String(CHART_WIDTH / 2, CHART_HEIGHT / 2, "no speeds in range", textAnchor="middle")
    )
    return drawing


def _time_chart(series: pd.Series) -> Drawing:
    """Speed over time; x in hours since the first window, labelled with dates."""
    drawing = Drawing(CHART_WIDTH, CHART_HEIGHT)
    if series.empty:
        return _no_data(drawing)
    start = series.index[0]
    hours = (series.index - start) / pd.Timedelta(hours=1)
    plot = LinePlot()
    plot.x, plot.y = 1.2 * cm, 0.8 * cm
    plot.width, plot.height = CHART_WIDTH - 1.6 * cm, CHART_HEIGHT - 1.2 * cm
    plot.data = [list(zip(hours, series.to_numpy(), strict=True))]
    plot.lines[0].strokeColor = ACCENT
    plot.lines[0].strokeWidth = 1
    plot.xValueAxis.valueMin = 0
    plot.xValueAxis.valueMax = max(float(hours[-1]), 1.0)
    plot.xValueAxis.labelTextFormat = lambda h: f"{start + pd.Timedelta(hours=h):%d %b %H:%M}"
    plot.xValueAxis.labels.fontSize = 7
    plot.yValueAxis.labels.fontSize = 7
    drawing.add(plot)
    return drawing


def _hour_chart(series: pd.Series) -> Drawing:
    drawing = Drawing(CHART_WIDTH, CHART_HEIGHT)
    if series.isna().all():
        return _no_data(drawing)
    chart = VerticalBarChart()
    chart.x, chart.y = 1.2 * cm, 0.8 * cm
    chart.width, chart.height = CHART_WIDTH - 1.6 * cm, CHART_HEIGHT - 1.2 * cm
    chart.data = [[0.0 if pd.isna(v) else float(v) for v in series]]
    chart.categoryAxis.categoryNames = [f"{h:02d}" for h in series.index]
    chart.categoryAxis.labels.fontSize = 7
    chart.valueAxis.labels.fontSize = 7
    chart.valueAxis.valueMin = 0
    chart.bars[0].fillColor = ACCENT
    drawing.add(chart)
    return drawing
