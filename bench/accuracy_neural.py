"""The neural family against the current selection on a held-out real day: train 1-5 March,
test 6 March.

The Graph WaveNet-style network trains on the 1-5 March speeds alone and stops early on the
last forward-chaining CV fold of that window (the end of 5 March); the tree families and the
per-horizon selection are trained exactly as in `accuracy_six_days.py`. Only targets on
6 March are scored, on the points where every forecast exists and the truth is valid, for the
network, the selection, their equal-weight average and persistence. Nothing here reads
week_average.npy (it averages the full four months, test day included). Prints one JSON line
on stdout and a readable table on stderr.

    .venv/bin/python bench/accuracy_neural.py [--epochs 60] [--patience 10] [--max-rows 60000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd
from accuracy_six_days import DATA, SIX_DAYS, TEST_DAY, TRAIN_END, _train, training_inputs

from traffic_core import features as f
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.metrics import evaluate_horizons, persistence_forecast
from traffic_core.models import select_best
from traffic_core.models.neural import NeuralConfig, make_samples, train_neural
from traffic_core.windows import WINDOW


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=NeuralConfig.max_epochs)
    parser.add_argument("--patience", type=int, default=NeuralConfig.patience)
    parser.add_argument("--max-rows", type=int, default=60_000)
    parser.add_argument("--splits", type=int, default=5)
    args = parser.parse_args()

    speeds = load_speed_csv(DATA / SIX_DAYS)
    graph = load_metr_la_graph(DATA)
    ids = list(graph.sensor_ids)
    config = NeuralConfig(max_epochs=args.epochs, patience=args.patience, cv_splits=args.splits)
    started = time.perf_counter()
    neural = train_neural(
        speeds.loc[:TRAIN_END],
        graph.adjacency,
        ids,
        config,
        log=lambda line: print(line, f"({time.perf_counter() - started:.0f} s)", file=sys.stderr),
    )
    samples = make_samples(speeds, ids)
    neural_forecast = neural.predict(samples.speeds, samples.clock)  # (moments, horizons, N)

    _, context, X, X_train, train_targets = training_inputs(speeds)
    if context.sensor_ids != ids:
        raise RuntimeError("feature context and graph disagree on the sensor order")
    started = time.perf_counter()
    models, _ = _train(X_train, train_targets, args.max_rows, args.splits)
    trees_seconds = time.perf_counter() - started
    best = select_best({h: m.values() for h, m in models.items()})

    targets = f.make_targets(speeds, sensor_ids=ids)
    if not targets["timestamp"].equals(pd.Series(samples.stamps.repeat(len(ids)))):
        raise RuntimeError("samples and targets are not row-aligned")
    persistence = persistence_forecast(speeds, sensor_ids=ids)
    parts, points = [], {}
    for i, (minutes, steps) in enumerate(f.HORIZONS.items()):
        column = f.target_column(steps)
        on_test_day = (targets["timestamp"] + steps * WINDOW).dt.normalize() == TEST_DAY
        truth = targets[column].to_numpy()
        preds = {
            "neural": neural_forecast[:, i, :].ravel(),
            "selection": best[minutes].predict(X),
            "persistence": persistence[column].to_numpy(),
        }
        preds["average"] = (preds["neural"] + preds["selection"]) / 2
        valid = on_test_day.to_numpy() & ~np.isnan(truth) & (truth != 0.0)
        scored = valid & np.logical_and.reduce([~np.isnan(p) for p in preds.values()])
        points[minutes] = {"valid": int(valid.sum()), "scored": int(scored.sum())}
        parts += [
            pd.DataFrame(
                {"model": name, "horizon": minutes, "y_true": truth[scored], "y_pred": p[scored]}
            )
            for name, p in preds.items()
        ]
    table = evaluate_horizons(pd.concat(parts, ignore_index=True))
    mae = table.pivot(index="horizon", columns="model", values="mae")
    result = {
        "bench": "accuracy_neural",
        "train": f"2012-03-01..{TRAIN_END}",
        "early_stop_on": "last forward-chaining CV fold of the training window",
        "test_targets_on": str(TEST_DAY.date()),
        "neural": neural.describe(),
        "trees_train_seconds": round(trees_seconds, 1),
        "selected": {str(h): m.family for h, m in best.items()},
        "points": {str(h): p for h, p in points.items()},
        "scores": table.round(4).to_dict(orient="records"),
        "mae_vs_selection_pct": {
            name: {
                str(h): round(100 * (mae.loc[h, name] / mae.loc[h, "selection"] - 1), 1)
                for h in mae.index
            }
            for name in ("neural", "average", "persistence")
        },
    }
    print(json.dumps(result))
    print(table.round(3).to_string(index=False), file=sys.stderr)


if __name__ == "__main__":
    main()
