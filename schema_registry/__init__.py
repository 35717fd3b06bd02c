"""A schema registry speaking the Confluent REST API (Avro): clients fetch schemas by id."""
