"""Domain core of the traffic platform: schemas, datasets, windows, features, metrics, registry.

Depends on no orchestration or web framework, so the Dagster assets, the API and the dashboard
all compute the same things the same way.
"""

__version__ = "0.1.0"
