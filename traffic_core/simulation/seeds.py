"""The independent random streams of one simulation (numpy generators seeded [seed, stream]),
so e.g. switching incidents off leaves every other part of the output equal."""

(
    GRAPH_STREAM,
    PROFILES_STREAM,
    INIT_STREAM,
    OUTAGES_STREAM,
    GAPS_STREAM,
    INCIDENTS_STREAM,
    DAY_STREAM,
    WEATHER_STREAM,
) = range(8)
