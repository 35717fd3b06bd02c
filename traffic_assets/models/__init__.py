"""Features and models: candidates per algorithm and horizon, the selected best, the registry."""
