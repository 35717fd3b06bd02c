"""Real traffic datasets (METR-LA, PEMS-BAY) in one normalised form."""

from traffic_core.datasets.graph import (
    SensorGraph,
    load_graph,
    load_metr_la_graph,
    load_pems_bay_graph,
)
from traffic_core.datasets.speeds import (
    FREQ,
    DatasetError,
    H5Check,
    default_data_dir,
    finalise_speeds,
    git_blob_id,
    load_metr_h5,
    load_parquet,
    load_speed_csv,
    load_speeds,
    parquet_metadata,
    save_parquet,
    to_long,
    verify_metr_h5,
)

__all__ = [
    "FREQ",
    "DatasetError",
    "H5Check",
    "SensorGraph",
    "default_data_dir",
    "finalise_speeds",
    "git_blob_id",
    "load_graph",
    "load_metr_h5",
    "load_metr_la_graph",
    "load_parquet",
    "load_pems_bay_graph",
    "load_speed_csv",
    "load_speeds",
    "parquet_metadata",
    "save_parquet",
    "to_long",
    "verify_metr_h5",
]
