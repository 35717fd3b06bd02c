"""`python -m traffic_core.simulation --days 28 --sensors 207 --out FILE.parquet`: SYNTHETIC
speeds and their incidents sidecar."""

from __future__ import annotations

import argparse
from pathlib import Path

from traffic_core.simulation.simulator import Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic METR-LA-shaped speeds.")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--sensors", type=int, default=207)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default="2012-03-01 00:00")
    parser.add_argument("--out", type=Path, required=True, help="speeds .parquet")
    parser.add_argument("--data-dir", type=Path, default=None, help="real data for calibration")
    parser.add_argument("--chunk-days", type=int, default=7)
    args = parser.parse_args(argv)
    sim = Simulator(
        args.days, args.sensors, seed=args.seed, start=args.start, data_dir=args.data_dir
    )
    speeds, sidecar = sim.write(args.out, args.chunk_days)
    print(
        f"wrote SYNTHETIC {sim.steps} x {sim.n} speeds to {speeds} and "
        f"{len(sim.incidents)} incidents to {sidecar}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
