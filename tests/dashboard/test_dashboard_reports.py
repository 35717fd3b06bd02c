"""Report builders: the CSV reads back as the rows, the PDF holds the title and the tables."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dashboard_helpers import write_real_lake
from pypdf import PdfReader

from dashboard.reports.dataset import (
    ReportData,
    ReportRequest,
    from_history,
    from_lake,
    sensor_summary,
    to_csv,
)
from dashboard.reports.pdf import TITLE, build_pdf
from serving.schemas import SensorHistory

DAY = date(2012, 3, 5)


@pytest.fixture(scope="module")
def lake(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_real_lake(tmp_path_factory.mktemp("lake"), shared_data, [DAY], sensors=12)


def read_pdf(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_lake_report_csv_reads_back_as_the_rows(lake: Path) -> None:
    report = from_lake(lake, ReportRequest(DAY, DAY, ("773869", "767541")))
    assert report is not None and report.source == "lake" and not report.synthetic
    back = pd.read_csv(io.BytesIO(to_csv(report)), dtype={"sensor_id": str})
    assert len(back) == 2 * 288
    assert set(back["sensor_id"]) == {"773869", "767541"}
    assert back["window_start"].iloc[0] == "2012-03-05T00:00:00Z"
    expected = report.rows["speed_mean"].round(3).to_numpy()
    np.testing.assert_allclose(back["speed_mean"], expected)


def test_no_lake_rows_means_ask_the_api(lake: Path) -> None:
    assert from_lake(lake, ReportRequest(date(2012, 3, 6), date(2012, 3, 6))) is None


def test_pdf_summary_has_title_key_figures_and_slowest_sensors(lake: Path) -> None:
    report = from_lake(lake, ReportRequest(DAY, DAY))
    assert report is not None
    text = read_pdf(build_pdf(report))
    assert TITLE in text
    assert "05 Mar 2012 to 05 Mar 2012" in text
    assert "12 sensors" in text and "lake 5-minute aggregates" in text
    assert "5-minute windows" in text and f"{12 * 288:,}" in text
    slowest = sensor_summary(report.rows).iloc[0]
    assert f"{slowest.sensor_id}" in text and f"{slowest.mean_speed_mph:.1f} mph" in text
    assert "SYNTHETIC" not in text


def history(sensor_id: str, synthetic: bool) -> SensorHistory:
    point = {
        "observed_speed_mph": 30.0,
        "typical_speed_mph": 55.0,
        "forecasts": {
            "15": {
                "minutes": 15,
                "target_time": "2012-03-06T06:00:00Z",
                "speed_mph": 33.0,
                "lower_mph": 28.0,
                "upper_mph": 38.0,
                "coverage": 0.9,
                "congestion": "severe",
            },
            "30": None,
        },
    }
    points = [
        {**point, "window_start": "2012-03-05T23:55:00Z"},
        {**point, "window_start": "2012-03-06T06:00:00Z"},
    ]
    return SensorHistory.model_validate(
        {"sensor_id": sensor_id, "model_version": "v1", "synthetic": synthetic, "points": points}
    )


def test_api_history_report_keeps_the_days_asked_and_classes_speeds() -> None:
    request = ReportRequest(date(2012, 3, 6), date(2012, 3, 6))
    report = from_history([history("a", False), history("b", True)], request)
    assert report.source == "api" and report.synthetic
    rows = report.rows
    assert rows["window_start"].dt.day.unique().tolist() == [6]
    assert rows.columns[:4].tolist() == ["sensor_id", "window_start", "speed_mean", "congestion"]
    assert rows["congestion"].unique().tolist() == ["severe"]
    assert rows["forecast_15min_mph"].tolist() == [33.0, 33.0]
    assert rows["forecast_30min_mph"].isna().all()
    text = read_pdf(build_pdf(report))
    assert "SYNTHETIC DATA" in text and "prediction API sensor history" in text


def test_an_empty_selection_still_makes_a_readable_pdf() -> None:
    empty = pd.DataFrame(
        {
            "sensor_id": pd.Series(dtype=str),
            "window_start": pd.Series(dtype="datetime64[ns, UTC]"),
            "speed_mean": pd.Series(dtype=float),
            "congestion": pd.Series(dtype=str),
        }
    )
    report = ReportData(ReportRequest(DAY, DAY), empty, "lake", False)
    text = read_pdf(build_pdf(report))
    assert TITLE in text and "no speeds in range" in text
