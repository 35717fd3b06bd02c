"""Score a published model on any speed file's held-out targets, next to both baselines.

    python -m traffic_core.evaluation --data FILE --test-from 2012-03-06 [--model latest|VERSION]
        [--registry DIR] [--start T] [--json OUT]

The version may be a tree model (the API's registry) or a neural one (its own registry root);
a neural version has no intervals to score.

Only targets at or after --test-from are scored; earlier rows give features their context and
fit the historical-average baseline. Prints a table per test window and optionally writes JSON.
When FILE is the full metr-la.h5, DCRNN's 70/10/20 test split is scored too, next to the
published DCRNN and Graph WaveNet figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from traffic_core.datasets import DatasetError, load_speeds, verify_metr_h5
from traffic_core.datasets.speeds import METR_LA_ROWS
from traffic_core.evaluation.forecasters import load_forecaster
from traffic_core.evaluation.holdout import (
    FORECASTERS,
    WindowScores,
    leaked_days,
    score_bundle,
)
from traffic_core.evaluation.splits import (
    PUBLISHED_MAE,
    TestWindow,
    dcrnn_test_window,
    targets_from,
)
from traffic_core.features import HORIZONS
from traffic_core.metrics import metrics_by_horizon
from traffic_core.model_bundle import BundleError
from traffic_core.settings import PlatformSettings


def is_full_metr_la(path: Path) -> bool:
    """An HDF5 file with the published metr-la.h5's 34,272 rows (a faithful re-saved copy
    counts too; `verify_metr_h5` reports a differing blob id)."""
    if path.suffix.lower() not in {".h5", ".hdf5"}:
        return False
    check = verify_metr_h5(path)
    print(check, file=sys.stderr)
    return check.rows == METR_LA_ROWS


def _window_report(result: WindowScores, manifest: dict[str, Any]) -> dict[str, Any]:
    window = result.window
    report: dict[str, Any] = {
        "description": window.description,
        "first_target": str(window.first_target),
        "issued_from": {str(m): str(t) for m, t in window.issued_from.items()},
        "issued_until": str(window.issued_until),
        "historical_average_fitted_until": str(result.profile_until),
        "points": {str(m): p for m, p in result.points.items()},
        "scores": metrics_by_horizon(result.scores),
        "intervals": {str(m): v for m, v in result.intervals.items()},
        "leaked_training_days": leaked_days(manifest, window),
    }
    if window.name == "dcrnn_70_10_20":
        report["published_mae"] = {
            name: {str(m): mae for m, mae in figures.items()}
            for name, figures in PUBLISHED_MAE.items()
        }
    return report


def _print_window(result: WindowScores) -> None:
    print(
        f"\n{result.window.description} (historical average fitted on readings to "
        f"{result.profile_until})"
    )
    order = {name: i for i, name in enumerate(FORECASTERS)}
    table = result.scores.sort_values(["horizon", "model"], key=lambda c: c.map(order).fillna(c))
    print(table.round(3).to_string(index=False))
    if result.intervals:
        coverage = ", ".join(
            f"{m} min {v['measured']:.3f} (±{v['half_width_mph']:.2f} mph)"
            for m, v in result.intervals.items()
        )
        nominal = next(iter(result.intervals.values()))["nominal"]
        print(f"interval coverage, nominal {nominal:.2f}: {coverage}")
    if result.window.name == "dcrnn_70_10_20":
        mae = result.scores.pivot(index="horizon", columns="model", values="mae")[list(FORECASTERS)]
        published = pd.DataFrame(PUBLISHED_MAE).rename_axis("horizon")
        print("MAE (mph) next to the published figures on the same split:")
        print(mae.join(published).round(2).to_string())


def main(
    argv: list[str] | None = None, *, full_metr_la: Callable[[Path], bool] = is_full_metr_la
) -> int:
    parser = argparse.ArgumentParser(prog="python -m traffic_core.evaluation", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="metr-la.h5, CSV or Parquet")
    parser.add_argument(
        "--test-from", required=True, help="score only targets at or after this time"
    )
    parser.add_argument("--model", default="latest", help="registry version (default: latest)")
    parser.add_argument("--registry", type=Path, default=PlatformSettings().model_dir)
    parser.add_argument(
        "--start", default=None, help="time of the first row of a CSV without timestamps"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    try:
        speeds = load_speeds(args.data, start=args.start)
        bundle = load_forecaster(args.registry, args.model)
        test_from = pd.Timestamp(args.test_from)
        if test_from.tz is not None:
            raise ValueError("--test-from must be a naive local time, as the data's timestamps")
        windows: list[TestWindow] = [targets_from(test_from, speeds.index[-1])]
        if full_metr_la(args.data):
            windows.append(dcrnn_test_window(speeds.index))
        results = score_bundle(speeds, bundle, windows)
    except (DatasetError, BundleError, ValueError, TypeError) as error:
        parser.error(str(error))

    manifest = bundle.manifest
    selected = {str(m): manifest["metrics"].get(str(m), {}).get("selected") for m in HORIZONS}
    report = {
        "data": str(args.data),
        "rows": len(speeds),
        "sensors": speeds.shape[1],
        "synthetic": bool(speeds.attrs.get("synthetic")),
        "model_version": bundle.version,
        "selected": selected,
        "evaluations": {r.window.name: _window_report(r, manifest) for r in results},
    }
    label = "SYNTHETIC " if report["synthetic"] else ""
    print(
        f"model {bundle.version} ({', '.join(f'{m} min {s}' for m, s in selected.items())}) on "
        f"{label}{args.data}: {len(speeds):,} rows x {speeds.shape[1]} sensors"
    )
    for result in results:
        _print_window(result)
    for name, evaluation in report["evaluations"].items():
        if evaluation["leaked_training_days"]:
            print(
                f"warning: {name}: the model trained on {evaluation['leaked_training_days']}, "
                "which reach the scored targets; these scores flatter it",
                file=sys.stderr,
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
