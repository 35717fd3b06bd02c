"""The pure parts behind the dashboard pages: corridors, metrics tables, lake heatmap, map."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from dashboard_helpers import batch_for, real_network, sensor

from dashboard.charts import sensor_speed_chart
from dashboard.congestion import chance_text
from dashboard.corridors import corridors, worst_corridors
from dashboard.frames import live_sensor_frame, sensor_forecast_frame, sensor_observed_frame
from dashboard.lake import (
    aggregate_files,
    day_profile,
    read_aggregates,
    synthetic_days,
    weekday_hour_matrix,
)
from dashboard.map_layers import NOW, basemap_style, map_points, network_deck
from dashboard.metrics_tables import metrics_tables
from serving.schemas import CongestionChances, SensorHistory
from traffic_core.lake import OffsetRange, write_raw_range


def test_chains_keep_only_mutual_first_links() -> None:
    # a -> b -> c along the road; d lists b downstream too, but b's first upstream is a.
    network = [
        sensor("a", [], ["b", "d"], -118.00),
        sensor("b", ["a", "d"], ["c"], -118.01),
        sensor("c", ["b"], [], -118.02),
        sensor("d", [], ["b"], -118.05),
    ]
    found = corridors(network)
    assert [c.sensors for c in found] == [("a", "b", "c"), ("d",)]
    assert found[0].name == "a → c"
    assert found[0].length_km == pytest.approx(1.85, abs=0.05)  # 0.02 degrees of longitude


def test_a_cycle_is_cut_and_every_sensor_lands_in_one_chain() -> None:
    found = corridors([sensor("x", ["y"], ["y"]), sensor("y", ["x"], ["x"])])
    assert [c.sensors for c in found] == [("x", "y")]


def test_the_real_network_splits_into_road_chains() -> None:
    network = real_network()
    found = corridors(network)
    assert sorted(s for c in found for s in c.sensors) == sorted(s.sensor_id for s in network)
    assert len(found[0].sensors) >= 10  # long stretches of one freeway, not pairs


def test_worst_corridors_rank_by_mean_speed_of_reporting_sensors() -> None:
    network = [
        sensor("a", [], ["b"]),
        sensor("b", ["a"], ["c"]),
        sensor("c", ["b"], []),
        sensor("p", [], ["q"]),
        sensor("q", ["p"], ["r"]),
        sensor("r", ["q"], []),
    ]
    speeds = {"a": 60.0, "b": 50.0, "c": None, "p": 20.0, "q": 30.0, "r": float("nan")}
    table = worst_corridors(corridors(network), speeds)
    assert table["corridor"].tolist() == ["p → r", "a → c"]
    assert table["mean_speed_mph"].tolist() == [25.0, 55.0]
    assert table["slowest_sensor"].tolist() == ["p", "b"]
    assert table["reporting"].tolist() == [2, 2]


def test_metrics_become_one_row_per_horizon_whatever_they_hold() -> None:
    metrics = {
        "15": {
            "selected": "ridge",
            "cv_mae": {"ridge": 2.1, "xgboost": 2.4},
            "params": {"alpha": 10.0},
            "interval": {"coverage": 0.9, "half_width_mph": 5.5},
            "baselines": {"persistence": 3.0},
        },
        "60": {"selected": "xgboost", "cv_mae": {"xgboost": 4.0}},
        "test": {"60": {"mae": 4.2}},
        "trained_rows": 1234,
    }
    tables = metrics_tables(metrics)
    assert tables.scores.index.tolist() == ["15 min", "60 min"]
    assert tables.scores.loc["15 min", "cv_mae / ridge"] == 2.1
    assert tables.scores.loc["15 min", "baselines / persistence"] == 3.0
    assert tables.scores.loc["60 min", "test / mae"] == 4.2
    assert tables.params.loc["15 min", "alpha"] == 10.0
    assert tables.other.to_dict("records") == [{"metric": "trained_rows", "value": "1234"}]
    assert metrics_tables({}).scores.empty and metrics_tables(None).other.empty


def write_day(lake: Path, day: str, speeds: list[float]) -> None:
    stamps = pd.date_range(day, periods=len(speeds), freq="1h", tz="UTC")
    classes = ["severe" if s < 35 else "congested" if s < 60 else "free_flow" for s in speeds]
    frame = pd.DataFrame(
        {"sensor_id": "a", "window_start": stamps, "speed_mean": speeds, "congestion": classes}
    )
    path = lake / "aggregates" / "traffic_5min" / f"date={day}" / "part.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path)


def test_weekday_hour_matrix_sums_days_then_divides(tmp_path: Path) -> None:
    write_day(tmp_path, "2012-03-05", [20.0, 65.0])  # a Monday
    write_day(tmp_path, "2012-03-12", [40.0, 65.0])  # the next Monday
    files = aggregate_files(tmp_path)
    assert list(files) == [date(2012, 3, 5), date(2012, 3, 12)]
    profiles = [day_profile(pd.read_parquet(p)) for p in files.values()]
    matrix = weekday_hour_matrix(profiles).set_index(["day", "hour"])
    assert matrix.loc[("Mon", 0), "mean_speed_mph"] == 30.0
    assert matrix.loc[("Mon", 0), "congested_share"] == 1.0
    assert matrix.loc[("Mon", 0), "severe_share"] == 0.5
    assert matrix.loc[("Mon", 1), "congested_share"] == 0.0
    rows = read_aggregates(tmp_path, date(2012, 3, 6), date(2012, 3, 12), ["a"])
    assert len(rows) == 2 and rows["window_start"].dt.day.unique().tolist() == [12]
    assert weekday_hour_matrix([]).empty
    assert aggregate_files(tmp_path / "nothing") == {}


def test_map_points_are_json_safe_and_describe_both_now_and_ahead() -> None:
    frame = live_sensor_frame([sensor("a", [], []), sensor("b", [], [])], batch=batch_for("a"))
    ahead = map_points(frame, 15).set_index("sensor_id")
    assert ahead.loc["a", "view_text"] == "30 mph (Severe)"
    assert ahead.loc["a", "interval_text"] == "25 to 35 mph"
    assert ahead.loc["a", "now_text"] == "50 mph (Congested)"
    assert ahead.loc["b", "view_text"] == "no reading"
    now = map_points(frame, NOW).set_index("sensor_id")
    assert now.loc["a", "fill"][:3] == [245, 150, 40]
    assert not np.isnan(now["weight"]).any()
    deck = json.loads(network_deck(frame, 60, tiles=None).to_json())  # NaN would not parse
    assert deck["layers"][1]["id"] == "sensors"


def test_a_withheld_forecast_says_why_on_the_map() -> None:
    batch = batch_for("a")
    withheld = {"speed_mph": None, "lower_mph": None, "upper_mph": None, "congestion": "unknown"}
    horizon = batch.forecasts[0].horizons[0]
    batch.forecasts[0].horizons[0] = horizon.model_copy(
        update={**withheld, "reason": "insufficient_history"}
    )
    frame = live_sensor_frame([sensor("a", [], [])], batch=batch)
    ahead = map_points(frame, 15).set_index("sensor_id")
    assert ahead.loc["a", "view_text"] == "withheld: insufficient history"
    assert ahead.loc["a", "interval_text"] == "—"
    assert json.loads(network_deck(frame, 15, tiles=None).to_json())


def test_the_basemap_calls_no_server_unless_tiles_are_configured() -> None:
    offline = unquote(basemap_style(None))
    assert offline.startswith("data:application/json,")
    assert "http" not in offline and json.loads(offline.split(",", 1)[1])["sources"] == {}
    tiles = "https://tiles.example/{z}/{x}/{y}.png"
    online = json.loads(unquote(basemap_style(tiles)).split(",", 1)[1])
    assert online["sources"]["basemap"]["tiles"] == [tiles]


def write_raw(lake: Path, day: str, synthetic: bool) -> None:
    stamps = pd.date_range(day, periods=3, freq="5min", tz="UTC")
    rows = pd.DataFrame(
        {
            "sensor_id": "a",
            "event_time": stamps,
            "speed_mph": 60.0,
            "volume": None,
            "occupancy": None,
            "source": "simulator" if synthetic else "metr-la",
            "is_synthetic": synthetic,
            "kafka_topic": "traffic-events",
            "kafka_partition": 0,
            "kafka_offset": range(3),
        }
    )
    start = 100 if synthetic else 0
    write_raw_range(lake, OffsetRange("traffic-events", 0, start, start + 2), rows)


def test_simulated_days_are_found_in_the_raw_zone(tmp_path: Path) -> None:
    write_raw(tmp_path, "2012-03-05", synthetic=False)
    write_raw(tmp_path, "2012-03-06", synthetic=True)
    days = [date(2012, 3, d) for d in (4, 5, 6)]
    assert synthetic_days(tmp_path, days) == [date(2012, 3, 6)]


def test_withheld_and_missing_forecasts_are_gaps_in_the_sensor_chart() -> None:
    """A withheld forecast (null with a reason) and a window without one become NaN rows, and
    the chart breaks its lines and band there: no line through zero or across the gap."""
    served = {
        "minutes": 15,
        "target_time": "2012-03-06T08:00:00Z",
        "speed_mph": 33.0,
        "lower_mph": 28.0,
        "upper_mph": 38.0,
        "coverage": 0.9,
        "congestion": "severe",
    }
    withheld = {
        **served,
        "speed_mph": None,
        "lower_mph": None,
        "upper_mph": None,
        "congestion": "unknown",
        "reason": "insufficient_history",
    }
    points = [
        {
            "window_start": f"2012-03-06T08:{m:02d}:00Z",
            "observed_speed_mph": 30.0,
            "typical_speed_mph": 50.0,
            "forecasts": {"15": f},
        }
        for m, f in ((0, served), (5, withheld), (10, None), (15, served))
    ]
    history = SensorHistory.model_validate(
        {"sensor_id": "a", "model_version": "v1", "synthetic": False, "points": points}
    )
    frame = sensor_forecast_frame(history)
    assert frame["forecast"].tolist()[0] == 33.0 and frame["forecast"].tolist()[3] == 33.0
    assert frame["forecast"].iloc[1:3].isna().all() and frame["lower"].iloc[1:3].isna().all()
    assert frame["reason"].fillna("-").tolist() == ["-", "insufficient_history", "-", "-"]
    chart = sensor_speed_chart(sensor_observed_frame(history), frame, 15).to_dict()
    marks = {layer["mark"]["type"]: layer["mark"] for layer in chart["layer"]}
    assert marks["area"]["invalid"] == marks["line"]["invalid"] == "break-paths-show-domains"


def test_planners_read_the_chance_of_congestion() -> None:
    chances = CongestionChances(severe=0.2, congested=0.5, free_flow=0.3)
    assert chance_text(30, chances) == "70% chance of congestion in 30 minutes (20% severe)"
    calm = CongestionChances(severe=0.01, congested=0.1, free_flow=0.89)
    assert chance_text(15, calm) == "11% chance of congestion in 15 minutes"
    assert chance_text(60, None) is None
