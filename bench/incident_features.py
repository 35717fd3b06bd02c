"""Do incident and weather features help? The same model with and without them, on SYNTHETIC weeks.

The simulator makes the speeds, its incidents (queues backing up upstream) and weather whose
rain slows traffic (`traffic_core.simulation.weather`). Features are the platform's training
matrix (`training_frame`: cross-fitted profiles) joined with `with_context_features` from the
incident reports in the contract's form (severity levels, as the producer sends them) and the
weather observations. The last `--test-days` days are held out; the earlier ones train one
XGBoost regressor per horizon with fixed settings, once on `FEATURE_NAMES` and once on
`FEATURE_NAMES + CONTEXT_FEATURE_NAMES`. MAE (mph, valid targets only) on the held-out days:
overall, inside incident periods (the forecast's origin between an incident's start and end at
a sensor the simulator says it affected: the simulator's truth, not the features' reach) and
in rain (precipitation reported for the origin's hour). One JSON object on stdout.

    .venv/bin/python bench/incident_features.py --days 28 --sensors 60
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
from xgboost import XGBRegressor

from traffic_core import features as f
from traffic_core.context_features import (
    CONTEXT_FEATURE_NAMES,
    SYNTHETIC_COLUMN,
    with_context_features,
)
from traffic_core.ingestion.producer import severity_level
from traffic_core.models import training_frame
from traffic_core.simulation import Simulator
from traffic_core.simulation.weather import simulate_weather, slow_for_weather


def contract_incidents(simulated: pd.DataFrame) -> pd.DataFrame:
    """The simulator's incident table as the lake stores reports (`replay_incidents`' fields)."""
    return pd.DataFrame(
        {
            "incident_id": simulated["incident_id"],
            "sensor_id": simulated["sensor_id"].astype(str),
            "start_time": pd.to_datetime(simulated["start"]).dt.tz_localize("UTC"),
            "end_time": pd.to_datetime(simulated["end"]).dt.tz_localize("UTC"),
            "severity": [severity_level(float(s)) for s in simulated["severity"]],
            "is_synthetic": simulated["source"] == "synthetic",
        }
    )


def incident_rows(frame: pd.DataFrame, simulated: pd.DataFrame) -> np.ndarray:
    """Rows whose origin lies in an incident at a sensor it affected (simulator truth)."""
    inside = np.zeros(len(frame), dtype=bool)
    stamps = frame["timestamp"].to_numpy()
    sensors = frame["sensor_id"].to_numpy()
    for row in simulated.itertuples(index=False):
        during = (stamps >= np.datetime64(row.start)) & (stamps < np.datetime64(row.end))
        inside |= during & np.isin(sensors, list(map(str, row.affected_sensors)))
    return inside


def rain_rows(frame: pd.DataFrame, weather: pd.DataFrame) -> np.ndarray:
    hourly = weather.set_index("observed_at")["precipitation_mm"]
    rain = hourly.reindex(pd.DatetimeIndex(frame["timestamp"]).ceil("1h")).to_numpy()
    return np.nan_to_num(rain) > 0


def mae(truth: np.ndarray, forecast: np.ndarray, rows: np.ndarray) -> float | None:
    return float(np.mean(np.abs(truth[rows] - forecast[rows]))) if rows.any() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--test-days", type=int, default=7)
    parser.add_argument("--sensors", type=int, default=60, help="a connected METR-LA subset")
    parser.add_argument("--incident-rate", type=float, default=0.03, help="per sensor per day")
    parser.add_argument("--rain-spells", type=float, default=0.25, help="per day")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument(
        "--max-train-rows", type=int, default=None, help="train on a fixed random sample"
    )
    parser.add_argument("--max-bin", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    began = time.perf_counter()

    sim = Simulator(args.days, args.sensors, seed=args.seed, incident_rate=args.incident_rate)
    weather = simulate_weather(sim.start, args.days, args.seed, spells_per_day=args.rain_spells)
    dataset = sim.run()
    speeds = slow_for_weather(dataset.speeds, weather)
    speeds = speeds.mask(speeds == 0.0)  # the simulator's missing marker
    context = f.FeatureContext.from_graph(dataset.graph, f.fit_profile(speeds))
    reports = contract_incidents(dataset.incidents)
    observations = weather.assign(observed_at=weather["observed_at"].dt.tz_localize("UTC"))
    frame = with_context_features(training_frame(speeds, context), context, reports, observations)
    built = time.perf_counter() - began

    split = sim.start + pd.Timedelta(days=args.days - args.test_days)
    train = (frame["timestamp"] < split).to_numpy()
    test = ~train
    if args.max_train_rows is not None and train.sum() > args.max_train_rows:
        rng = np.random.default_rng(args.seed)
        keep = rng.choice(np.flatnonzero(train), args.max_train_rows, replace=False)
        train = np.zeros_like(train)
        train[keep] = True
    inside = incident_rows(frame, dataset.incidents) & test
    rainy = rain_rows(frame, weather) & test
    variants = {
        "without": list(f.FEATURE_NAMES),
        "with": [*f.FEATURE_NAMES, *CONTEXT_FEATURE_NAMES],
    }
    results: dict[str, dict] = {}
    for minutes, steps in f.HORIZONS.items():
        target = frame[f.target_column(steps)].to_numpy()
        valid = ~np.isnan(target)
        per_variant = {}
        for name, columns in variants.items():
            X = frame[columns].to_numpy(dtype="float32")
            model = XGBRegressor(
                n_estimators=args.trees,
                max_depth=6,
                learning_rate=0.1,
                subsample=0.8,
                tree_method="hist",
                max_bin=args.max_bin,
                n_jobs=args.threads,
                random_state=args.seed,
            )
            fit_began = time.perf_counter()
            model.fit(X[train & valid], target[train & valid])
            forecast = model.predict(X)
            per_variant[name] = {
                "mae_overall": mae(target, forecast, test & valid),
                "mae_incidents": mae(target, forecast, inside & valid),
                "mae_rain": mae(target, forecast, rainy & valid),
                "fit_seconds": round(time.perf_counter() - fit_began, 1),
            }
        results[f"{minutes}min"] = per_variant

    print(
        json.dumps(
            {
                "data": "SYNTHETIC",
                "days": args.days,
                "test_days": args.test_days,
                "sensors": sim.n,
                "incidents": len(dataset.incidents),
                "incident_rate_per_sensor_day": args.incident_rate,
                "rain_hours": int((weather["precipitation_mm"] > 0).sum()),
                "train_rows_sampled": int(train.sum()),
                "test_rows": int(test.sum()),
                "test_rows_in_incidents": int(inside.sum()),
                "test_rows_in_rain": int(rainy.sum()),
                "rows_labelled_synthetic": int(frame[SYNTHETIC_COLUMN].sum()),
                "model": f"XGBRegressor({args.trees} trees, depth 6, lr 0.1, "
                f"max_bin {args.max_bin}), one per horizon",
                "results": results,
                "features_seconds": round(built, 1),
                "wall_seconds": round(time.perf_counter() - began, 1),
                "load_average": os.getloadavg(),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
