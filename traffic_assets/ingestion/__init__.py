"""Ingestion: Kafka offset ranges into the raw zone of the lake."""
