"""Mondrian intervals and class probabilities as the API serves them, from a real model
trained on 1-5 March 2012, and a bundle published before them still served as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from api_fixtures import real_speeds

from serving.forecasting import ForecastSnapshot, forecast_all
from serving.schemas import OneForecast
from traffic_core.features import HORIZONS
from traffic_core.model_bundle import INTERVALS_FILE, ModelBundle
from traffic_core.predictive import PROBABILITY_CLASSES
from traffic_core.registry import BUILDER_KEYS, MANIFEST, ModelRegistry
from traffic_core.windows import DEFAULT_THRESHOLDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AT = pd.Timestamp("2012-03-06 08:00", tz="UTC")
"""Morning rush of a day the model never saw: every congestion class is present."""


@pytest.fixture(scope="module")
def speeds(shared_data: Path) -> pd.DataFrame:
    return (
        real_speeds(shared_data)
        .loc[AT.tz_localize(None) - pd.Timedelta("2h") : AT.tz_localize(None)]
        .tz_localize("UTC")
    )


def load(registry: Path) -> ModelBundle:
    store = ModelRegistry(registry)
    version = store.latest()
    assert version is not None
    return ModelBundle.load(store, version)


def served(snapshot: ForecastSnapshot) -> list[OneForecast]:
    return [OneForecast.model_validate_json(snapshot.one_json(s)) for s in snapshot.sensor_ids]


def test_the_bundle_keeps_the_regimes_it_was_published_with(model_registry: Path) -> None:
    bundle = load(model_registry)
    folder = ModelRegistry(model_registry).path(bundle.version)
    stored = json.loads((folder / INTERVALS_FILE).read_text())
    metrics = bundle.manifest["metrics"]
    assert set(bundle.regimes) == set(HORIZONS)
    for minutes, regimes in bundle.regimes.items():
        assert regimes.to_json() == stored[str(minutes)]["regimes"]
        assert metrics[str(minutes)]["interval"]["regime_half_width_mph"] == pytest.approx(
            dict(regimes.regime_half_widths)
        )
        # errors grow with congestion: the regimes' widths must say so
        widths = regimes.regime_half_widths
        assert widths["free_flow"] < widths["congested"] < widths["severe"]


def test_served_forecasts_carry_class_probabilities_and_regime_widths(
    model_registry: Path, speeds: pd.DataFrame
) -> None:
    bundle = load(model_registry)
    snapshot = forecast_all(bundle, speeds, AT, synthetic=False)
    observed = snapshot.observed
    bodies = served(snapshot)
    regimes = DEFAULT_THRESHOLDS.classify(observed)
    assert {"severe", "congested", "free_flow"} <= set(regimes)
    for i, body in enumerate(bodies):
        for h in body.horizons:
            assert (h.probabilities is None) == (h.speed_mph is None), h
            if h.speed_mph is None:
                continue
            p = [getattr(h.probabilities, c) for c in PROBABILITY_CLASSES]
            assert sum(p) == pytest.approx(1.0, abs=2e-3)
            q = bundle.regimes[h.minutes].half_widths(observed[i : i + 1])[0]
            assert h.upper_mph == pytest.approx(min(h.speed_mph + q, 120.0), abs=0.011)
    slow = [
        b for b, r in zip(bodies, regimes, strict=True) if r == "severe" and b.horizons[0].speed_mph
    ]
    fast = [
        b
        for b, r in zip(bodies, regimes, strict=True)
        if r == "free_flow" and b.horizons[0].speed_mph
    ]
    # a sensor in a jam now is more likely to be congested in 15 minutes than a free one
    assert np.mean([slowed(b) for b in slow]) > 0.5 > np.mean([slowed(b) for b in fast])


def slowed(body: OneForecast) -> float:
    """The chance of congestion (congested or severe) in 15 minutes."""
    chances = body.horizons[0].probabilities
    assert chances is not None
    return 1.0 - chances.free_flow


def test_a_bundle_published_before_regimes_serves_its_split_conformal_intervals(
    model_registry: Path, speeds: pd.DataFrame, tmp_path: Path
) -> None:
    source = ModelRegistry(model_registry)
    version = source.latest()
    assert version is not None
    folder, manifest = source.path(version), source.load_manifest(version)

    def build(staging: Path) -> dict:
        for path in folder.iterdir():
            if path.name != MANIFEST:
                shutil.copyfile(path, staging / path.name)
        intervals = json.loads((folder / INTERVALS_FILE).read_text())
        old = {m: {k: v[k] for k in ("coverage", "half_width_mph")} for m, v in intervals.items()}
        (staging / INTERVALS_FILE).write_text(json.dumps(old))
        return {k: manifest[k] for k in BUILDER_KEYS}

    ModelRegistry(tmp_path).publish(build, code_version="before-regimes")
    bundle = load(tmp_path)
    assert bundle.regimes == {}
    snapshot = forecast_all(bundle, speeds, AT, synthetic=False)
    assert snapshot.probabilities is None
    for body in served(snapshot):
        for h in body.horizons:
            assert h.probabilities is None
            if h.speed_mph is not None:
                q = bundle.half_widths[h.minutes]
                assert h.lower_mph == pytest.approx(max(h.speed_mph - q, 0.0), abs=0.011)
