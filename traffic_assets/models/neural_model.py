"""`neural_model`: the Graph WaveNet-style family trained on the training days, exported to one
ONNX graph and published to the neural registry with the same lineage as `best_model`.

It reads the days `training_features` chose (so both families learn from the same complete
days) as a speed grid, not the feature rows: the network sees the raw last hour of every
sensor. Training takes minutes on 2 cores, so it is materialized on demand (Dagster UI, or
`dagster asset materialize --select neural_model`), not by the retrain sensor. It trains in a
process of its own: JAX's thread pools would stay in the run's process, which then could not
safely fork (PySpark forks to launch its gateway).
"""

from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.network import NetworkResource
from traffic_assets.models.best_model import kafka_lineage
from traffic_assets.models.training_data import speed_grid, training_features, training_ingest_ids
from traffic_core.models.neural import NeuralConfig, train_neural
from traffic_core.models.neural_publish import neural_builder
from traffic_core.registry import ModelRegistry

DEFAULTS = NeuralConfig()


class NeuralTrainingConfig(Config):
    max_epochs: int = Field(default=DEFAULTS.max_epochs, ge=1)
    patience: int = Field(default=DEFAULTS.patience, ge=1)
    channels: int = Field(
        default=DEFAULTS.residual_channels,
        ge=2,
        description="Residual and dilation channels; skip and end channels scale with them.",
    )
    seed: int = DEFAULTS.seed

    def neural_config(self) -> NeuralConfig:
        scale = self.channels / DEFAULTS.residual_channels
        return replace(
            DEFAULTS,
            residual_channels=self.channels,
            dilation_channels=self.channels,
            skip_channels=max(2, round(DEFAULTS.skip_channels * scale)),
            end_channels=max(2, round(DEFAULTS.end_channels * scale)),
            max_epochs=self.max_epochs,
            patience=self.patience,
            seed=self.seed,
        )


@asset(
    deps=[training_features],
    group_name="models",
    code_version="1",
    kinds={"jax", "onnx"},
    description="The Graph WaveNet-style neural family (diffusion over the road graph, gated "
    "dilated convolutions) trained on the training days' speeds, early-stopped on the last "
    "forward-chaining fold, as one ONNX graph for every sensor and horizon in the neural "
    "registry; materialized on demand (minutes on 2 cores).",
)
def neural_model(
    context: AssetExecutionContext,
    config: NeuralTrainingConfig,
    lake: LakeResource,
    network: NetworkResource,
    model_store: ModelStoreResource,
) -> MaterializeResult:
    days = lake.features_dir().joinpath("days.txt").read_text().split()
    grid, found = speed_grid(lake, days)
    if found != days:
        raise ValueError(f"training days without aggregates: {sorted(set(days) - set(found))}")
    graph = network.graph()
    sensors = [s for s in graph.sensor_ids if s in grid.columns]
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        adjacency = graph.subgraph(sensors).adjacency
        model = pool.submit(train_neural, grid, adjacency, sensors, config.neural_config()).result()
    for epoch in model.history:
        context.log.info(
            "epoch %d: train MAE %.4f, validation MAE %.4f",
            epoch["epoch"],
            epoch["train_mae"],
            epoch["val_mae"],
        )
    registry = ModelRegistry(model_store.neural_path)
    lineage = (days, kafka_lineage(context, days), training_ingest_ids(lake))
    version = registry.publish(neural_builder(model, grid, *lineage))
    described = model.describe()
    context.log.info("published neural version %s (%s)", version, described)
    return MaterializeResult(
        metadata={
            "model_version": version,
            "cv_mae": MetadataValue.json({str(m): round(v, 4) for m, v in model.cv_mae.items()}),
            "best_epoch": model.best_epoch,
            "epochs_run": described["epochs_run"],
            "train_seconds": described["train_seconds"],
            "sensors": len(sensors),
            "lake_partitions": MetadataValue.json(days),
            "dagster/uri": MetadataValue.path(str(registry.path(version))),
        }
    )
