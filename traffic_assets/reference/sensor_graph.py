"""The sensor network (ids, locations, road-graph neighbours) as a lake table."""

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from resources.lake import LakeResource
from traffic_core.networks import load_network_graph
from traffic_core.reference import sensors_table_path
from traffic_core.settings import PlatformSettings


@asset(
    group_name="reference",
    code_version="1",
    kinds={"parquet"},
    automation_condition=AutomationCondition.on_missing(),
    description="Sensors of the configured network with location and road-graph degree.",
)
def sensor_graph(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    settings = PlatformSettings()
    dataset_dir = settings.data_dir / settings.dataset
    graph = load_network_graph(settings.dataset, dataset_dir)
    adjacency = graph.adjacency.copy()
    np.fill_diagonal(adjacency, 0.0)
    table = graph.locations.assign(
        neighbours=(adjacency > 0).sum(axis=1).astype("int32"),
        dataset=settings.dataset,
    )
    out = sensors_table_path(lake.path(), settings.dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    context.log.info("wrote %d sensors to %s", len(table), out)
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "dagster/uri": MetadataValue.path(str(out)),
            "source": MetadataValue.path(str(dataset_dir)),
            "mean_neighbours": float(table["neighbours"].mean()),
            "preview": MetadataValue.md(pd.DataFrame(table.head(5)).to_markdown(index=False)),
        }
    )
