"""The retrain sensor asks for a run only when new aggregated days arrived after the last model."""

from __future__ import annotations

from dagster import AssetMaterialization, DagsterInstance, RunRequest, build_sensor_context

from sensors.new_data import retrain_on_new_data


def tick(instance: DagsterInstance) -> RunRequest | None:
    result = retrain_on_new_data.evaluate_tick(build_sensor_context(instance=instance))
    return result.run_requests[0] if result.run_requests else None


def test_retrains_after_new_days_and_not_again_until_more_arrive() -> None:
    with DagsterInstance.ephemeral() as instance:
        assert tick(instance) is None
        for day in ("2012-03-01", "2012-03-02"):
            instance.report_runless_asset_event(
                AssetMaterialization("traffic_5min_aggregates", partition=day)
            )
        request = tick(instance)
        assert request is not None and request.tags["new_days"] == "2"
        assert tick(instance).run_key == request.run_key  # same evidence, same run key

        instance.report_runless_asset_event(AssetMaterialization("best_model"))
        assert tick(instance) is None
        instance.report_runless_asset_event(
            AssetMaterialization("traffic_5min_aggregates", partition="2012-03-03")
        )
        later = tick(instance)
        assert later is not None and later.run_key != request.run_key
        assert later.tags["new_days"] == "1"
