"""The soak's model report: the seed the API started with, what the pipeline's retrain runs
published during the soak, and which version the API serves at the end."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import yaml

from sensors.retrain import retrain_job
from traffic_core.registry import ModelRegistry


def served_version(api_url: str) -> str | None:
    """The model version the API serves now (`/v1/ready` names it, ready or not)."""
    try:
        return httpx.get(f"{api_url}/v1/ready", timeout=10).json().get("model")
    except (httpx.HTTPError, ValueError):
        return None


def retrained_versions(registry: ModelRegistry) -> list[str]:
    """Versions the pipeline published: trained on lake days (a seed names none)."""
    return [v for v in registry.list_versions() if registry.load_manifest(v)["lake_partitions"]]


def retrain_runs(dagster_url: str) -> list[dict[str, Any]]:
    """Every run of the retrain job: status, seconds, days and training options used."""
    query = (
        "query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs {"
        " results { runId status startTime endTime runConfigYaml tags { key value } } } } }"
    )
    variables = {"filter": {"pipelineName": retrain_job.name}}
    reply = httpx.post(
        f"{dagster_url}/graphql", json={"query": query, "variables": variables}, timeout=30
    ).json()
    runs = []
    for run in reversed(reply["data"]["runsOrError"]["results"]):
        tags = {t["key"]: t["value"] for t in run["tags"]}
        ops = (yaml.safe_load(run["runConfigYaml"] or "") or {}).get("ops", {})
        start, end = run["startTime"], run["endTime"]
        days = ops.get("training_features", {}).get("config", {}).get("days")
        runs.append(
            {
                "run_id": run["runId"],
                "status": run["status"],
                "seconds": round(end - start, 1) if start and end else None,
                "training_days": None if days is None else [str(d) for d in days],  # YAML dates
                "new_days": tags.get("new_days"),
                "candidate_options": ops.get("xgboost_model", {}).get("config", "defaults"),
            }
        )
    return runs


def wait_for_retrained_model(
    registry: ModelRegistry, answered_by: Counter[str], timeout: float, say: Any
) -> float | None:
    """Seconds until the load's answers carry a version a retrain published (None if not in
    time): the client's view of the swap, not only the registry's."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if set(answered_by.copy()) & set(retrained_versions(registry)):
            return time.monotonic() - started
        time.sleep(5)
    say(f"no answer came from a retrained model within {timeout:.0f} s")
    return None


def models_report(
    registry: ModelRegistry,
    seed: str | None,
    api_url: str,
    dagster_url: str,
    answered_by: Counter[str],
) -> dict[str, Any]:
    """Seed, published versions with their days and selections, retrain runs, and whether
    the API switched from the seed to a retrained version."""
    retrained = retrained_versions(registry)
    serving = served_version(api_url)
    published = []
    for version in retrained:
        manifest = registry.load_manifest(version)
        published.append(
            {
                "version": version,
                "lake_days": manifest["lake_partitions"],
                "selected": {m: v["selected"] for m, v in manifest["metrics"].items()},
            }
        )
    return {
        "seed_version": seed,
        "published_by_retrain": published,
        "retrain_runs": retrain_runs(dagster_url),
        "api_serves": serving,
        "api_switched_to_retrained": serving is not None and serving in retrained,
        "one_sensor_answers_by_version": dict(answered_by),
    }
