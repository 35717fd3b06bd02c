"""What flagging forecasts with incidents adds to a window close, on the METR-LA graph.

Times, per window: the incident flags for every sensor (`IncidentBook.flags`, the active
incidents times their precomputed reach), and the encoding of all 207 forecasts with and
without those flags (`ForecastSnapshot`, what `on_incidents` redoes when an incident changes).
Incidents are SYNTHETIC, spread over random sensors. Prints one JSON object.

    .venv/bin/python bench/incident_flags.py --active 0,10,100,1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from serving.forecasting import ForecastSnapshot
from serving.live.context import IncidentBook, IncidentReach
from serving.plausibility import Bounded
from traffic_core.datasets import load_metr_la_graph
from traffic_core.features import HORIZONS

AT = datetime(2012, 3, 6, 8, tzinfo=UTC)


def timed(run: Callable[[], object], repeat: int) -> dict[str, float]:
    """Median and worst of `repeat` runs, in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 3), "max_ms": round(max(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--active", default="0,10,100,1000")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    graph = load_metr_la_graph()
    started = time.perf_counter()
    reach = IncidentReach(graph)
    reach_ms = (time.perf_counter() - started) * 1000
    n = len(graph)
    rng = np.random.default_rng(7)
    speeds = rng.uniform(20, 70, n)
    forecasts = {
        m: Bounded(speeds, speeds - 5, speeds + 5, np.full(n, None, dtype=object)) for m in HORIZONS
    }

    def snapshot(flags: dict | None) -> ForecastSnapshot:
        return ForecastSnapshot(
            issued_for=pd.Timestamp(AT) - pd.Timedelta("5min"),
            model_version="bench",
            synthetic=True,
            sensor_ids=tuple(graph.sensor_ids),
            observed=speeds,
            forecasts=forecasts,
            coverage=0.9,
            incidents=flags,
        )

    rows = []
    for active in map(int, args.active.split(",")):
        book = IncidentBook(reach)
        book.apply(
            {
                "incident_id": f"SYN-{k}",
                "sensor_id": graph.sensor_ids[int(rng.integers(n))],
                "start_time": AT - timedelta(minutes=30),
                "end_time": None,
                "severity": "MAJOR",
                "affected_sensors": [],
                "source": "synthetic",
                "is_synthetic": True,
            }
            for k in range(active)
        )
        flags = book.flags(AT)
        rows.append(
            {
                "active_incidents": active,
                "flagged_sensors": len(flags),
                "flags": timed(lambda b=book: b.flags(AT), args.repeat),
                "encode_with_flags": timed(lambda f=flags: snapshot(f), args.repeat),
                "encode_without": timed(lambda: snapshot(None), args.repeat),
            }
        )
    print(json.dumps({"sensors": n, "reach_build_ms": round(reach_ms, 1), "runs": rows}))


if __name__ == "__main__":
    main()
