"""`python -m traffic_core.simulation --days 28 --sensors 207 --out FILE.parquet`: SYNTHETIC
speeds and their incidents sidecar; `--weather` adds SYNTHETIC weather (a CSV sidecar) whose rain
slows the speeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from traffic_core.simulation.simulator import Simulator, weather_path
from traffic_core.simulation.weather import simulate_weather


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic METR-LA-shaped speeds.")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--sensors", type=int, default=207)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default="2012-03-01 00:00")
    parser.add_argument("--out", type=Path, required=True, help="speeds .parquet")
    parser.add_argument("--data-dir", type=Path, default=None, help="real data for calibration")
    parser.add_argument("--chunk-days", type=int, default=7)
    parser.add_argument("--weather", action="store_true", help="also simulate weather")
    args = parser.parse_args(argv)
    sim = Simulator(
        args.days, args.sensors, seed=args.seed, start=args.start, data_dir=args.data_dir
    )
    weather = simulate_weather(args.start, args.days, args.seed) if args.weather else None
    speeds, sidecar = sim.write(args.out, args.chunk_days, weather)
    print(
        f"wrote SYNTHETIC {sim.steps} x {sim.n} speeds to {speeds} and "
        f"{len(sim.incidents)} incidents to {sidecar}"
    )
    if weather is not None:
        weather.to_csv(weather_path(speeds), index=False)
        print(f"wrote {len(weather)} SYNTHETIC weather observations to {weather_path(speeds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
