"""Raw readings to 5-minute aggregates per sensor, computed with Spark over daily partitions."""
