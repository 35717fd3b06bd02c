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
from resources.network import NetworkResource
from traffic_core.reference import sensors_table_path


@asset(
    group_name="reference",
    code_version="1",
    kinds={"parquet"},
    automation_condition=AutomationCondition.on_missing(),
    description="Sensors of the configured network with location and road-graph degree.",
)
def sensor_graph(
    context: AssetExecutionContext, lake: LakeResource, network: NetworkResource
) -> MaterializeResult:
    graph = network.graph()
    adjacency = graph.adjacency.copy()
    np.fill_diagonal(adjacency, 0.0)
    table = graph.locations.assign(
        neighbours=(adjacency > 0).sum(axis=1).astype("int32"),
        dataset=network.dataset,
    )
    out = sensors_table_path(lake.path(), network.dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    context.log.info("wrote %d sensors to %s", len(table), out)
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "dagster/uri": MetadataValue.path(str(out)),
            "source": MetadataValue.path(str(network.dataset_dir)),
            "mean_neighbours": float(table["neighbours"].mean()),
            "preview": MetadataValue.md(pd.DataFrame(table.head(5)).to_markdown(index=False)),
        }
    )
