"""Kafka helpers shared by the producer, the Dagster assets and the API."""
