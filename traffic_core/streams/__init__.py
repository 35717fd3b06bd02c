"""The stream layer: Quix Streams applications over the platform's topics."""
