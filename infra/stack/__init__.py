"""Start, stop and inspect the local services (Kafka, PostgreSQL, Dagster) without Docker."""
