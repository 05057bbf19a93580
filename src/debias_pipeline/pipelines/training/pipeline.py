"""The training template, reused for every model under its own namespace."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.training.nodes import package_recommender, resolve_compute_device, train_model

SHARED_INPUTS = {"train_data", "evaluators", "compute_device", "id_maps", "item_metadata", "train_matrix"}
SHARED_PARAMETERS = {"params:seed", "params:dataset"}


def create_device_pipeline() -> Pipeline:
    """Resolve the ``device`` parameter once for every model of the run."""
    return Pipeline(
        [node(resolve_compute_device, inputs="params:device", outputs="compute_device", name="resolve_compute_device")]
    )


def pretrained_input(namespace: str) -> str:
    """The template's input for the fitted weights of the model of block ``<namespace>.model``."""
    return f"pretrained_{namespace}"


def create_pipeline(namespace: str = "model", pretrained: tuple[str, ...] = ()) -> Pipeline:
    """Training nodes of the model whose parameters are the block ``<namespace>.model``;
    it starts from the fitted weights of the models of ``pretrained`` (namespaces), the
    inputs ``pretrained_<namespace>``."""
    train = update_wrapper(partial(train_model, where=f"{namespace}.model", pretrained=pretrained), train_model)
    return Pipeline(
        [
            node(
                train,
                inputs=[
                    "train_data",
                    "evaluators",
                    "params:model",
                    "params:seed",
                    "compute_device",
                    *(pretrained_input(name) for name in pretrained),
                ],
                outputs=["trained_model", "model_weights", "learning_curves", "training_history"],
                name="train_model",
            ),
            node(
                package_recommender,
                inputs=["trained_model", "id_maps", "item_metadata", "train_matrix", "params:dataset"],
                outputs=["recommender", "mlflow_model"],
                name="package_recommender",
            ),
        ]
    )
