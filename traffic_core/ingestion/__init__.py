"""Getting readings into the lake: the producer that replays datasets into Kafka, the offset
planner the Dagster sensor asks, range ingestion for the asset, the consumer-group workers,
direct raw imports, ingest ids, and the validation configuration all writers share."""
