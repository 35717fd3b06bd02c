"""`spark_training_features`: the training features computed by Spark, one lake folder per day.

The first step of training that outgrows one machine: the same features as `training_features`
(checked equal to `traffic_core.features.make_features` with the profile of the training days),
computed where the aggregates are, and kept per day so a new day adds a folder.
"""

import pyarrow.parquet as pq
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from resources.lake import LakeResource
from resources.network import NetworkResource
from traffic_assets.aggregation.assets import traffic_5min_aggregates
from traffic_assets.models.spark_features import build_feature_days
from traffic_core import features as f
from traffic_core.lake import spark_features_day_dir, spark_features_dir


class SparkFeaturesConfig(Config):
    days: list[str] = Field(
        default=[], description="Aggregated days to compute features for; empty: every one."
    )
    train_days: list[str] = Field(
        default=[],
        description="Days the typical-speed profile is fitted on (the training window, never "
        "later than the days it is used for in a backtest); empty: the same days.",
    )


@asset(
    deps=[traffic_5min_aggregates],
    group_name="features",
    code_version=f.FEATURE_VERSION,
    kinds={"spark", "parquet"},
    description="Every feature of traffic_core.features for each sensor and window of the "
    "chosen aggregated days, computed by Spark and written as one folder per day.",
)
def spark_training_features(
    context: AssetExecutionContext,
    config: SparkFeaturesConfig,
    pyspark: LazyPySparkResource,
    lake: LakeResource,
    network: NetworkResource,
) -> MaterializeResult:
    days = sorted(config.days or [day.isoformat() for day in lake.aggregates_files()])
    train_days = sorted(config.train_days or days)
    build_feature_days(pyspark.spark_session, lake.local_path(), network.graph(), days, train_days)
    rows = sum(
        pq.ParquetFile(part).metadata.num_rows
        for day in days
        for part in spark_features_day_dir(lake.local_path(), day).glob("*.parquet")
    )
    context.log.info("%d feature rows over %d days, profile of %s", rows, len(days), train_days)
    return MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "dagster/uri": MetadataValue.path(str(spark_features_dir(lake.local_path()))),
            "days": MetadataValue.json(days),
            "train_days": MetadataValue.json(train_days),
            "feature_version": f.FEATURE_VERSION,
        }
    )
