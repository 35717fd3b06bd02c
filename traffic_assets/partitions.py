"""Daily partitions shared by every lake asset: UTC calendar dates of the readings' event time."""

from dagster import DailyPartitionsDefinition

daily_partitions = DailyPartitionsDefinition(start_date="2012-03-01", timezone="UTC")
