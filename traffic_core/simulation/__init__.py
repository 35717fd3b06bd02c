"""Synthetic METR-LA-shaped speeds for any span and sensor count, calibrated on real data.

Why: the real speeds available here cover six days, far too little to exercise streaming,
retraining and serving over weeks or years. The simulator reproduces what matters to
those parts - per-sensor weekly profiles, day-to-day variation, noise correlated in time
and along roads, incidents whose queues spread upstream, and METR-LA's outages (zeros) -
and labels every output as synthetic so it can never pass for real data.

Calibration (see `calibrate`) uses the real average week only to shape simulated days;
per PROVENANCE.md week_average.npy must never become a model feature.
"""

from traffic_core.simulation.calibration import STEPS_PER_DAY, Calibration, calibrate
from traffic_core.simulation.network import synthetic_graph
from traffic_core.simulation.simulator import (
    GENERATOR,
    INCIDENT_COLUMNS,
    SimulatedDataset,
    Simulator,
    incidents_path,
    simulate,
)

__all__ = [
    "GENERATOR",
    "INCIDENT_COLUMNS",
    "STEPS_PER_DAY",
    "Calibration",
    "SimulatedDataset",
    "Simulator",
    "calibrate",
    "incidents_path",
    "simulate",
    "synthetic_graph",
]
