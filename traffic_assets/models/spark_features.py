"""Spark implementation of `traffic_core.features.make_features` over the lake's aggregates.

The same definitions, for history that outgrows one machine: lags, differences and rolling
statistics are window functions over each sensor's 5-minute grid, neighbour features a join of
the grid with the road graph's edge list (direct links and two links away), the profile a
group-by over the training days with the same weekday -> day type -> any day fallback. Every
step, horizon and neighbour set comes from `traffic_core.features`, and `feature_columns`
refuses to run unless its columns are exactly `FEATURE_NAMES`, so the two cannot drift apart
silently; a test compares both on the real METR-LA days. The incident and weather columns
(`traffic_core.context_features.CONTEXT_FEATURE_NAMES`) are declared apart and joined in pandas
only; no model reads them from this table.

`feature_frame` is `make_features` with one given profile (fitted on the training days);
`training_matrix` is the whole training matrix of `traffic_core.models.training_frame`: each
day's profile fitted on the other days (`crossfit_features`, from per-day sums and counts:
totals minus the day's own) and every horizon's target (the speed that many steps ahead on the
sensor's grid). Missing stays missing: NaN, absent windows and the 0 mph marker become null,
and a feature or target that needs them is null.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window, WindowSpec
from pyspark.sql import functions as F

from traffic_assets.aggregation.assets import spark_url
from traffic_core import features as f
from traffic_core import lake
from traffic_core.datasets import SensorGraph
from traffic_core.lake_storage import local_only
from traffic_core.windows import WINDOW, WINDOWS_PER_DAY

DAY_COLUMN = "date"
"""The partition column: its folders are `traffic_core.lake.day_folder`'s `date=YYYY-MM-DD`."""

_STEP_SECONDS = WINDOW // pd.Timedelta(seconds=1)
_DAY_SECONDS = 86_400
_LINK_KEY = ["sensor_id", "neighbour_id"]
_PROFILE_KEYS = (("week_slot",), ("weekend", "slot"), ("slot",))
"""The profile's fallback chain (`features.fit_profile`): the same weekday and slot, else the
same day type (weekday or weekend) and slot, else the slot on any day."""
HORIZONS = dict(f.HORIZONS)
"""The horizons `FEATURE_NAMES` and the targets were built from: fixed at import, as the
feature names are, whichever horizons a caller trains."""
_DAY_STEPS = WINDOWS_PER_DAY + max(HORIZONS.values())
"""Steps of one day's profile a row of that day can look up: its own day and the longest
horizon into the next."""


def read_speeds(spark: SparkSession, aggregate_files: Sequence[str | Path]) -> DataFrame:
    """(timestamp, sensor_id, speed) from aggregates files: the `speed_mean` that
    `training_data.speed_grid` pivots, NaN and the 0 mph marker as null."""
    if not aggregate_files:
        raise ValueError("no aggregates files given")
    rows = spark.read.parquet(*(str(p) for p in aggregate_files))
    speed = F.col("speed_mean").cast("double")
    return rows.select(
        F.col("window_start").alias("timestamp"),
        F.col("sensor_id").cast("string").alias("sensor_id"),
        F.when(F.isnan(speed) | (speed == 0.0), None).otherwise(speed).alias("speed"),
    )


def week_slot(timestamp: Column, steps_ahead: int = 0) -> Column:
    """Monday 00:00 = 0 ... Sunday 23:55 = 2015, as `features._week_slot`, from the epoch
    seconds (1970-01-01 was a Thursday), so the session time zone plays no part."""
    seconds = F.unix_seconds(timestamp) + steps_ahead * _STEP_SECONDS
    weekday = F.pmod(F.floor(seconds / _DAY_SECONDS) + 3, 7)
    return weekday * WINDOWS_PER_DAY + F.floor(F.pmod(seconds, _DAY_SECONDS) / _STEP_SECONDS)


def epoch_day(timestamp: Column) -> Column:
    """Days since 1970-01-01 of a timestamp, from its epoch seconds (no session time zone)."""
    return F.floor(F.unix_seconds(timestamp) / _DAY_SECONDS)


def _slot_keys(slot: Column) -> list[Column]:
    """Every key of `_PROFILE_KEYS` from a week slot."""
    return [
        slot.alias("week_slot"),
        (slot >= 5 * WINDOWS_PER_DAY).alias("weekend"),
        F.pmod(slot, WINDOWS_PER_DAY).cast("long").alias("slot"),
    ]


def on_grid(speeds: DataFrame, sensor_ids: Sequence[str]) -> DataFrame:
    """Every 5-minute step of the speeds' span for every sensor, as `features.on_grid`: a
    step or sensor without a row has a null speed, so shifting by rows is shifting by time."""
    span = speeds.agg(F.min("timestamp").alias("first"), F.max("timestamp").alias("last"))
    stamps = span.select(
        F.explode(F.sequence("first", "last", F.expr(f"INTERVAL {_STEP_SECONDS} SECONDS"))).alias(
            "timestamp"
        )
    )
    return stamps.crossJoin(_sensors(speeds.sparkSession, sensor_ids)).join(
        speeds, ["timestamp", "sensor_id"], "left"
    )


def fit_profile(train_speeds: DataFrame, sensor_ids: Sequence[str]) -> DataFrame:
    """(sensor_id, week_slot, profile) for every sensor and slot, as `features.fit_profile`:
    the mean for that weekday and slot, else over same-type days, else over all days."""
    valid = train_speeds.where(F.col("speed").isNotNull()).select(
        "sensor_id", *_slot_keys(week_slot(F.col("timestamp"))), "speed"
    )

    def means(keys: tuple[str, ...], name: str) -> DataFrame:
        return valid.groupBy("sensor_id", *keys).agg(F.avg("speed").alias(name))

    spark = train_speeds.sparkSession
    slots = spark.range(f.WEEK_SLOTS).select(*_slot_keys(F.col("id").cast("long")))
    table = _sensors(spark, sensor_ids).crossJoin(slots)
    for index, keys in enumerate(_PROFILE_KEYS):
        table = table.join(means(keys, f"mean{index}"), ["sensor_id", *keys], "left")
    return table.select("sensor_id", "week_slot", _fallback().alias("profile"))


def _fallback() -> Column:
    """The first of the `_PROFILE_KEYS` means (`mean0`, `mean1`, ...) that is not null."""
    return F.coalesce(*(F.col(f"mean{index}") for index in range(len(_PROFILE_KEYS))))


def _sensors(spark: SparkSession, sensor_ids: Sequence[str]) -> DataFrame:
    return spark.createDataFrame([(s,) for s in sensor_ids], "sensor_id string")


def crossfit_profiles(speeds: DataFrame, sensor_ids: Sequence[str]) -> DataFrame:
    """(sensor_id, day, day_profile) for every day of the speeds' span: the profile a row of
    that day gets in `crossfit_features`, `features.fit_profile` over every other day, as an
    array of `_DAY_STEPS` values from the day's 00:00 on. Per (sensor, day, slot) sums and
    counts; per fallback key their totals minus the day's own; then the fallback chain."""
    spark = speeds.sparkSession
    stamp = F.col("timestamp")
    own = (
        speeds.where(F.col("speed").isNotNull())
        .groupBy("sensor_id", epoch_day(stamp).alias("day"), *_slot_keys(week_slot(stamp)))
        .agg(F.sum("speed").alias("total"), F.count("speed").alias("count"))
    )
    span = speeds.agg(epoch_day(F.min(stamp)).alias("first"), epoch_day(F.max(stamp)).alias("last"))
    lookups = (
        span.select(F.explode(F.sequence("first", "last")).alias("day"))
        .crossJoin(spark.range(_DAY_STEPS).withColumnRenamed("id", "step"))
        .crossJoin(_sensors(spark, sensor_ids))
        .withColumn(
            "at", F.timestamp_seconds(F.col("day") * _DAY_SECONDS + F.col("step") * _STEP_SECONDS)
        )
        .select("sensor_id", "day", "step", *_slot_keys(week_slot(F.col("at"))))
    )
    # the day's own sums at each slot; they count in a key's totals when their key is the same
    kept = ("week_slot", "weekend", "slot", "total", "count")
    mine = own.select("sensor_id", "day", "slot", *(F.col(c).alias(f"own_{c}") for c in kept))
    table = lookups.join(mine, ["sensor_id", "day", "slot"], "left")
    for index, keys in enumerate(_PROFILE_KEYS):
        totals = own.groupBy("sensor_id", *keys).agg(
            F.sum("total").alias("all_total"), F.sum("count").alias("all_count")
        )
        same = F.lit(True)
        for key in keys:
            same = same & (F.col(f"own_{key}") == F.col(key))

        def held_out(column: str, same: Column = same) -> Column:
            return F.col(f"all_{column}") - F.when(same, F.col(f"own_{column}")).otherwise(0)

        table = (
            table.join(totals, ["sensor_id", *keys], "left")
            .withColumn(
                f"mean{index}", F.when(held_out("count") > 0, held_out("total") / held_out("count"))
            )
            .drop("all_total", "all_count")
        )
    ordered = F.sort_array(F.collect_list(F.struct("step", _fallback().alias("profile"))))
    return table.groupBy("sensor_id", "day").agg(
        F.transform(ordered, lambda step: step["profile"]).alias("day_profile")
    )


def profile_weeks(profile: DataFrame) -> DataFrame:
    """(sensor_id, week): each sensor's profile as one array indexed by week slot, a row per
    sensor, small enough to broadcast, so looking a slot up needs no shuffle of the grid."""
    ordered = F.sort_array(F.collect_list(F.struct("week_slot", "profile")))
    return profile.groupBy("sensor_id").agg(
        F.transform(ordered, lambda slot: slot["profile"]).alias("week")
    )


def profile_at(timestamp: Column, steps_ahead: int = 0) -> Column:
    """The profile `steps_ahead` steps after `timestamp` from the joined `week` array
    (`features.profile_at`; a week slot wraps from Sunday to Monday)."""
    return F.get(F.col("week"), week_slot(timestamp, steps_ahead))


def graph_links(spark: SparkSession, graph: SensorGraph) -> DataFrame:
    """(sensor_id, side, neighbour_id, weight) for each of `features.SIDES`, as
    `FeatureContext` builds them: direct links, and two links away weighted by the path's
    product, without direct links or the sensor itself; only positive weights."""
    src, dst, weight = graph.edges()
    ids = graph.sensor_ids
    links = spark.createDataFrame(
        [(ids[i], ids[j], float(w)) for i, j, w in zip(src, dst, weight, strict=True)],
        "sensor_id string, neighbour_id string, weight double",
    )
    first = links.alias("first")
    second = links.alias("second")
    two_links = (
        first.join(second, F.col("first.neighbour_id") == F.col("second.sensor_id"))
        .groupBy(
            F.col("first.sensor_id").alias("sensor_id"),
            F.col("second.neighbour_id").alias("neighbour_id"),
        )
        .agg(F.sum(F.col("first.weight") * F.col("second.weight")).alias("weight"))
        .where(F.col("sensor_id") != F.col("neighbour_id"))
        .join(links.select(*_LINK_KEY), _LINK_KEY, "left_anti")
    )

    def side(frame: DataFrame, name: str, reverse: bool) -> DataFrame:
        sensor, neighbour = ("neighbour_id", "sensor_id") if reverse else _LINK_KEY
        return frame.where(F.col("weight") > 0).select(
            F.col(sensor).alias("sensor_id"),
            F.lit(name).alias("side"),
            F.col(neighbour).alias("neighbour_id"),
            "weight",
        )

    upstream, downstream, upstream2, downstream2 = f.SIDES
    return (
        side(links, upstream, reverse=True)
        .unionByName(side(links, downstream, reverse=False))
        .unionByName(side(two_links, upstream2, reverse=True))
        .unionByName(side(two_links, downstream2, reverse=False))
    )


def neighbour_means(grid: DataFrame, links: DataFrame) -> DataFrame:
    """(timestamp, sensor_id, <side>_mean and <side>_deviation per side): the weighted mean of
    the neighbours' speed, and of how far below their profile they are, over the neighbours
    that have one; null when none has (`features._neighbour_mean`)."""
    values = grid.select(
        "timestamp",
        F.col("sensor_id").alias("neighbour_id"),
        "speed",
        (F.col("speed") - F.col("profile_now")).alias("deviation"),
    )

    def weighted_mean(column: str, side: str) -> Column:
        valid = (F.col("side") == side) & F.col(column).isNotNull()
        total = F.sum(F.when(valid, F.col(column) * F.col("weight")))
        weight = F.sum(F.when(valid, F.col("weight")))
        return F.when(weight > 0, total / weight)

    means = [
        weighted_mean(column, side).alias(f"{side}_{suffix}")
        for side in f.SIDES
        for column, suffix in (("speed", "mean"), ("deviation", "deviation"))
    ]
    # the edge list is small (a sensor has a handful of links): broadcast, the grid stays put
    joined = F.broadcast(links).join(values, "neighbour_id")
    return joined.groupBy("timestamp", "sensor_id").agg(*means)


def feature_columns() -> dict[str, Column]:
    """Each of `FEATURE_NAMES` as a column over the grid joined with profile and neighbour
    means; a name on one side only is an error, so Spark never computes another feature set."""
    history = _history()

    def lag(column: str, steps: int) -> Column:
        return F.lag(column, steps).over(history) if steps else F.col(column)

    def recent(steps: int) -> WindowSpec:
        return history.rowsBetween(1 - steps, Window.currentRow)

    speed = F.col("speed")
    columns = {f"speed_lag{k}": lag("speed", k) for k in range(f.LOOKBACK)}
    columns |= {f"diff_{k}": speed - lag("speed", k) for k in f.DIFF_STEPS}
    for name, steps in f.ROLLING.items():
        columns[f"mean_{name}"] = F.avg(speed).over(recent(steps))
        columns[f"std_{name}"] = F.stddev_samp(speed).over(recent(steps))
        columns[f"min_{name}"] = F.min(speed).over(recent(steps))
    # rows before the data's first step count as missing, as the padded lags do in pandas
    columns["missing_60min"] = (f.LOOKBACK - F.count(speed).over(recent(f.LOOKBACK))).cast("double")
    seconds = F.unix_seconds(F.col("timestamp"))
    minutes = F.floor(F.pmod(seconds, _DAY_SECONDS) / 60).cast("double")
    day = F.pmod(F.floor(seconds / _DAY_SECONDS) + 3, 7).cast("double")
    columns |= {
        "tod_sin": F.sin(F.lit(2 * math.pi) * minutes / 1440),
        "tod_cos": F.cos(F.lit(2 * math.pi) * minutes / 1440),
        "dow_sin": F.sin(F.lit(2 * math.pi) * day / 7),
        "dow_cos": F.cos(F.lit(2 * math.pi) * day / 7),
        "is_weekend": (day >= 5).cast("double"),
    }
    for side in f.SIDES:
        columns |= {f"{side}_mean_lag{k}": lag(f"{side}_mean", k) for k in f.NEIGHBOUR_LAGS}
        columns[f"{side}_deviation"] = F.col(f"{side}_deviation")
    columns["profile_now"] = F.col("profile_now")
    columns |= {f"profile_{m}min": F.col(f"profile_{m}min") for m in HORIZONS}
    columns["profile_deviation"] = speed - F.col("profile_now")
    missing = [name for name in f.FEATURE_NAMES if name not in columns]
    extra = [name for name in columns if name not in f.FEATURE_NAMES]
    if missing or extra:
        raise ValueError(f"Spark features differ from FEATURE_NAMES: lacks {missing}, has {extra}")
    return {name: columns[name] for name in f.FEATURE_NAMES}


def _history() -> WindowSpec:
    """Each sensor's grid in time order: shifting by rows is shifting by 5-minute steps."""
    return Window.partitionBy("sensor_id").orderBy("timestamp")


def _with_features(grid: DataFrame, graph: SensorGraph, *extra: Column) -> DataFrame:
    """(timestamp, sensor_id, *FEATURE_NAMES, *extra) from the grid with its profile columns
    (`profile_now`, `profile_<m>min`) and the graph's neighbour means."""
    columns = feature_columns()
    neighbours = neighbour_means(grid, graph_links(grid.sparkSession, graph))
    full = grid.join(neighbours, ["timestamp", "sensor_id"], "left")
    return full.select("timestamp", "sensor_id", *(c.alias(n) for n, c in columns.items()), *extra)


def _profile_columns(at: Callable[[int], Column]) -> list[Column]:
    """`profile_now` and `profile_<m>min` per horizon, from `at(steps_ahead)`."""
    ahead = [at(steps).alias(f"profile_{minutes}min") for minutes, steps in HORIZONS.items()]
    return [at(0).alias("profile_now"), *ahead]


def feature_frame(speeds: DataFrame, graph: SensorGraph, profile: DataFrame) -> DataFrame:
    """(timestamp, sensor_id, *FEATURE_NAMES) for every step of the speeds' span and every
    sensor of the graph: `make_features(speeds, FeatureContext.from_graph(graph, profile))`."""
    grid = (
        on_grid(speeds, graph.sensor_ids)
        .join(F.broadcast(profile_weeks(profile)), "sensor_id", "left")
        .select(
            "timestamp",
            "sensor_id",
            "speed",
            *_profile_columns(lambda steps: profile_at(F.col("timestamp"), steps)),
        )
    )
    return _with_features(grid, graph)


def _crossfit_rows(speeds: DataFrame) -> DataFrame:
    """(day, first, last): the steps of each day that `crossfit_features` gives rows for. It
    grids each day with the readings of the hour before it, so a day's rows run from the
    first step in that span (the day's 00:00 at the latest when the hour before has any) to
    the day's last step with any reading; a day without readings has none."""
    stamps = speeds.select("timestamp").distinct().withColumn("day", epoch_day(F.col("timestamp")))
    lead_in = (f.LOOKBACK - 1) * _STEP_SECONDS
    next_day = epoch_day(F.timestamp_seconds(F.unix_seconds(F.col("timestamp")) + lead_in))
    windows = stamps.withColumn("window_day", F.explode(F.array_distinct(F.array("day", next_day))))
    bounds = windows.groupBy(F.col("window_day").alias("day")).agg(
        F.min("timestamp").alias("first"),
        F.max(F.when(F.col("day") == F.col("window_day"), F.col("timestamp"))).alias("last"),
    )
    return bounds.where(F.col("last").isNotNull())


def training_matrix(speeds: DataFrame, graph: SensorGraph) -> DataFrame:
    """(timestamp, sensor_id, *FEATURE_NAMES, target_<m>min per horizon): what
    `traffic_core.models.training_frame(speeds, FeatureContext.from_graph(graph, ...))` gives,
    the same rows and values: every day's profile features from the profile of the other days
    (`crossfit_profiles`), the targets the speed each horizon's steps ahead on the sensor's
    grid (null when missing or beyond the data)."""
    stamp = F.col("timestamp")
    since_midnight = F.unix_seconds(stamp) - F.col("day") * _DAY_SECONDS
    step = (since_midnight / _STEP_SECONDS).cast("int")

    def at(steps: int) -> Column:
        return F.get(F.col("day_profile"), step + steps)

    grid = (
        on_grid(speeds, graph.sensor_ids)
        .withColumn("day", epoch_day(stamp))
        .join(crossfit_profiles(speeds, graph.sensor_ids), ["sensor_id", "day"], "left")
        .select("timestamp", "sensor_id", "day", "speed", *_profile_columns(at))
    )
    targets = [
        F.lead("speed", steps).over(_history()).alias(f.target_column(steps))
        for steps in HORIZONS.values()
    ]
    rows = F.broadcast(_crossfit_rows(speeds))
    return (
        _with_features(grid, graph, F.col("day"), *targets)
        .join(rows, "day")
        .where(stamp.between(F.col("first"), F.col("last")))
        .drop("day", "first", "last")
    )


def write_feature_days(frame: DataFrame, out_dir: Path, days: Sequence[str]) -> None:
    """Parquet under `out_dir`, one `date=YYYY-MM-DD` folder for each of `days`; those
    replace their folders, other days are left as they are (the grid spans the days between
    non-adjacent ones, whose rows are not features anyone asked for)."""
    day = F.date_from_unix_date(F.floor(F.unix_seconds(F.col("timestamp")) / _DAY_SECONDS))
    (
        frame.withColumn(DAY_COLUMN, day)
        .where(F.col(DAY_COLUMN).isin([date.fromisoformat(d) for d in days]))
        .repartition(DAY_COLUMN)
        .sortWithinPartitions("timestamp", "sensor_id")
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy(DAY_COLUMN)
        .parquet(spark_url(out_dir), compression="zstd")
    )


def _refuse_absent(lake_root: Path, *day_lists: Sequence[str]) -> None:
    absent = [
        day
        for days in day_lists
        for day in sorted(
            set(days) - {d.isoformat() for d in lake.aggregates_files(lake_root, days)}
        )
    ]
    if absent:
        raise ValueError(f"days without aggregates: {absent}")


def lake_speeds(
    spark: SparkSession, lake_root: Path, graph: SensorGraph, days: Sequence[str]
) -> tuple[DataFrame, SensorGraph]:
    """The speeds of the aggregated `days` and the graph of its sensors that have aggregates
    (as `training_features` picks them); a day without aggregates is an error."""
    _refuse_absent(lake_root, days)
    files = lake.aggregates_files(lake_root, days)
    speeds = read_speeds(spark, [spark_url(p) for p in files.values()])
    present = {row.sensor_id for row in speeds.select("sensor_id").distinct().collect()}
    return speeds, graph.subgraph([s for s in graph.sensor_ids if s in present])


def build_feature_days(
    spark: SparkSession,
    lake_root: Path,
    graph: SensorGraph,
    days: Sequence[str],
    train_days: Sequence[str],
) -> DataFrame:
    """Features of the aggregated `days` with the profile fitted on `train_days`, for the
    graph's sensors that have aggregates, written to the lake's Spark features zone; returns
    the feature frame as written."""
    _refuse_absent(lake_root, days, train_days)
    speeds, sensors = lake_speeds(spark, lake_root, graph, days)
    train_files = lake.aggregates_files(lake_root, train_days).values()
    train = read_speeds(spark, [spark_url(p) for p in train_files])
    frame = feature_frame(speeds, sensors, fit_profile(train, sensors.sensor_ids))
    write_feature_days(frame, local_only(lake.spark_features_dir(lake_root)), days)
    return frame


def build_training_matrix(
    spark: SparkSession, lake_root: Path, graph: SensorGraph, days: Sequence[str]
) -> DataFrame:
    """`training_matrix` of the aggregated `days` for the graph's sensors that have
    aggregates: the rows `training_features` writes, computed where the aggregates are."""
    return training_matrix(*lake_speeds(spark, lake_root, graph, days))
