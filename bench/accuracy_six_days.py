"""Accuracy of the three model families on the real six METR-LA days: train 1-5 March, test 6 March.

Only targets on 6 March are scored; their features may use earlier readings (the hour before,
as the live API would). Training targets come from the 1-5 March speeds alone, so no label
reaches into the test day, and the typical-speed profile is fitted on 1-5 March only (never
week_average.npy, which averages the full four months); training rows see a profile without
their own day (`crossfit_features`), as the test day does. All models, the selected best and
the two baselines are scored on the same points: valid ground truth where every forecast
exists. Prints one JSON line on stdout and a readable table on stderr.

The selection's intervals are scored split-conformal (one half-width per horizon) and Mondrian
(one per congestion regime: the class observed when the forecast is made), each by the
regime and by the class of the truth; its class probabilities by multi-class Brier score
against persistence's class (one-hot) and in a reliability diagram, written with the
reliability table to `--out` (default bench/output).

    .venv/bin/python bench/accuracy_six_days.py [--max-rows 60000] [--splits 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from reliability_diagram import draw

from traffic_core import features as f
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.evaluation.probabilistic import (
    brier_score,
    coverage_by_class,
    one_hot,
    reliability_table,
)
from traffic_core.metrics import (
    evaluate_horizons,
    historical_average_forecast,
    persistence_forecast,
)
from traffic_core.models import (
    FAMILIES,
    ConformalInterval,
    coverage,
    crossfit_features,
    select_best,
    train_horizon,
)
from traffic_core.models.mondrian import fit_regimes
from traffic_core.models.training import OBSERVED_COLUMN, TrainedModel
from traffic_core.predictive import PROBABILITY_CLASSES
from traffic_core.windows import DEFAULT_THRESHOLDS, WINDOW

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "metr-la"
SIX_DAYS = "los_loop_speed_2012-03-01_to_03-06.csv"
TRAIN_END = pd.Timestamp("2012-03-05 23:55")
TEST_DAY = pd.Timestamp("2012-03-06")
NOMINAL = (0.8, 0.9, 0.95)
SERVED_NOMINAL = 0.9
OUT = Path(__file__).resolve().parent / "output"
KEYS = ["timestamp", "sensor_id"]


def _train(
    X: np.ndarray, targets: pd.DataFrame, max_rows: int, splits: int
) -> tuple[dict[int, dict[str, TrainedModel]], dict[str, float]]:
    """Every family for every horizon; seconds per family summed over horizons."""
    models: dict[int, dict[str, TrainedModel]] = {}
    seconds = dict.fromkeys(FAMILIES, 0.0)
    for minutes, steps in f.HORIZONS.items():
        y = targets[f.target_column(steps)].to_numpy()
        models[minutes] = {}
        for name in FAMILIES:
            started = time.perf_counter()
            models[minutes][name] = train_horizon(
                X, y, targets["timestamp"], name, n_splits=splits, max_rows=max_rows
            )
            seconds[name] += time.perf_counter() - started
    return models, seconds


def training_inputs(
    speeds: pd.DataFrame,
) -> tuple[pd.DataFrame, f.FeatureContext, np.ndarray, np.ndarray, pd.DataFrame]:
    """Profile and context from 1-5 March, features of every moment, and the cross-fitted
    training features with their row-aligned targets (1-5 March only)."""
    train_speeds = speeds.loc[:TRAIN_END]
    profile = f.fit_profile(train_speeds)
    context = f.FeatureContext.from_graph(load_metr_la_graph(DATA), profile)
    X = f.make_features(speeds, context)[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")
    train_frame = crossfit_features(train_speeds, context)
    train_targets = f.make_targets(train_speeds, sensor_ids=context.sensor_ids)
    if not train_frame[KEYS].equals(train_targets[KEYS]):
        raise RuntimeError("training features and targets are not row-aligned")
    X_train = train_frame[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")
    return profile, context, X, X_train, train_targets


def _probabilistic(
    model: TrainedModel,
    truth: np.ndarray,
    point: np.ndarray,
    observed: np.ndarray,
    persistence: np.ndarray,
) -> tuple[dict, pd.DataFrame]:
    """Coverage of the served-level intervals, split-conformal and Mondrian, per regime and
    per true class; Brier scores of the class probabilities, of persistence's class and of
    the point forecast's class; the reliability table."""
    if model.observed is None:
        raise RuntimeError(f"{model.family} kept no observed speeds to calibrate regimes on")
    classify = DEFAULT_THRESHOLDS.classify
    regimes = fit_regimes(model.residuals, model.observed, SERVED_NOMINAL)
    true_class, regime = classify(truth), classify(observed)
    widths = {
        "split": np.full(len(point), regimes.half_width),
        "mondrian": regimes.half_widths(observed),
    }
    coverages = {}
    for method, q in widths.items():
        lo, hi = point - q, point + q
        coverages[method] = {
            "all": coverage(truth, lo, hi),
            "mean_width_mph": float(2 * q.mean()),
            "by_regime": coverage_by_class(regime, truth, lo, hi),
            "by_true_class": coverage_by_class(true_class, truth, lo, hi),
        }
    probabilities = regimes.probabilities(point, observed)
    return {
        "nominal": SERVED_NOMINAL,
        "coverage": coverages,
        "regime_half_width_mph": dict(regimes.regime_half_widths),
        "brier": {
            "probabilities": brier_score(probabilities, true_class),
            "persistence_class": brier_score(one_hot(classify(persistence)), true_class),
            "point_forecast_class": brier_score(one_hot(classify(point)), true_class),
        },
        "class_share": dict(
            zip(PROBABILITY_CLASSES, one_hot(true_class).mean(axis=0).tolist(), strict=True)
        ),
    }, reliability_table(probabilities, true_class)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-rows", type=int, default=60_000)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT, help="reliability diagram and table")
    args = parser.parse_args()

    speeds = load_speed_csv(DATA / SIX_DAYS)
    profile, context, X, X_train, train_targets = training_inputs(speeds)
    ids = context.sensor_ids

    started, cpu_started = time.perf_counter(), time.process_time()
    models, family_seconds = _train(X_train, train_targets, args.max_rows, args.splits)
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started  # all threads: steadier when shared
    best = select_best({h: m.values() for h, m in models.items()})

    targets = f.make_targets(speeds, sensor_ids=ids)
    baselines = {
        "persistence": persistence_forecast(speeds, sensor_ids=ids),
        "historical_average": historical_average_forecast(speeds, profile, sensor_ids=ids),
    }
    parts, intervals, points, probabilistic, reliability = [], {}, {}, {}, {}
    for minutes, steps in f.HORIZONS.items():
        column = f.target_column(steps)
        on_test_day = (targets["timestamp"] + steps * WINDOW).dt.normalize() == TEST_DAY
        truth = targets[column].to_numpy()
        preds = {name: model.predict(X) for name, model in models[minutes].items()}
        preds["best"] = preds[best[minutes].family]
        preds |= {name: b[column].to_numpy() for name, b in baselines.items()}
        valid = on_test_day.to_numpy() & ~np.isnan(truth) & (truth != 0.0)
        scored = valid & np.logical_and.reduce([~np.isnan(p) for p in preds.values()])
        points[minutes] = {"valid": int(valid.sum()), "scored": int(scored.sum())}
        for name, pred in preds.items():
            parts.append(
                pd.DataFrame(
                    {
                        "model": name,
                        "horizon": minutes,
                        "y_true": truth[scored],
                        "y_pred": pred[scored],
                    }
                )
            )
        intervals[minutes] = []
        for nominal in NOMINAL:
            interval = ConformalInterval.fit(best[minutes].residuals, nominal)
            lo, hi = interval.bounds(preds["best"][scored])
            intervals[minutes].append(
                {
                    "nominal": nominal,
                    "measured": coverage(truth[scored], lo, hi),
                    "half_width_mph": interval.q,
                }
            )
        observed = X[scored, OBSERVED_COLUMN]
        probabilistic[minutes], reliability[minutes] = _probabilistic(
            best[minutes],
            truth[scored],
            preds["best"][scored],
            observed,
            preds["persistence"][scored],
        )
    reliability_frame = pd.concat(
        [t.assign(horizon=m) for m, t in reliability.items()], ignore_index=True
    )
    args.out.mkdir(parents=True, exist_ok=True)
    reliability_frame.to_csv(args.out / "reliability_six_days.csv", index=False)
    diagram = draw(
        reliability_frame,
        f"Class probabilities of the selection on {TEST_DAY.date()}: reliability",
        args.out / "reliability_six_days.png",
    )
    table = evaluate_horizons(pd.concat(parts, ignore_index=True))
    result = {
        "bench": "accuracy_six_days",
        "train": f"2012-03-01..{TRAIN_END}",
        "test_targets_on": str(TEST_DAY.date()),
        "max_rows": args.max_rows,
        "cv_splits": args.splits,
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "train_seconds_by_family": {k: round(v, 1) for k, v in family_seconds.items()},
        "selected": {
            str(h): {"family": m.family, "params": m.params, "cv_mae": m.cv_mae}
            for h, m in best.items()
        },
        "cv_mae": {
            str(h): {name: m.cv_mae for name, m in by_family.items()}
            for h, by_family in models.items()
        },
        "points": {str(h): p for h, p in points.items()},
        "scores": table.round(4).to_dict(orient="records"),
        "intervals_best": {str(h): v for h, v in intervals.items()},
        "probabilistic_best": {str(h): v for h, v in probabilistic.items()},
        "reliability_diagram": str(diagram),
    }
    print(json.dumps(result))
    print(table.round(3).to_string(index=False), file=sys.stderr)
    for minutes, v in probabilistic.items():
        cover = {
            method: {c: round(x["coverage"], 3) for c, x in by["by_true_class"].items()}
            for method, by in v["coverage"].items()
        }
        brier = {k: round(x, 4) for k, x in v["brier"].items()}
        print(f"{minutes} min: coverage by true class {cover}; Brier {brier}", file=sys.stderr)


if __name__ == "__main__":
    main()
