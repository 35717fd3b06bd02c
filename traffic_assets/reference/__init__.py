"""Reference data: the sensor network itself."""
