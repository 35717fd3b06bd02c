"""Daily partitions shared by every lake asset: UTC calendar dates of the readings' event time.

Today is a partition too (`end_offset=1`): a live stream's readings of the current day are
stored as they come (a partial day, re-aggregated as it grows; training waits for complete
days), instead of being refused as outside the partitions."""

from dagster import DailyPartitionsDefinition

daily_partitions = DailyPartitionsDefinition(start_date="2012-03-01", timezone="UTC", end_offset=1)
