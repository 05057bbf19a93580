"""One mini-batch fit over several processes, GPUs or machines (``torch.distributed``).

Launched by ``torchrun``, one process per device::

    torchrun --nproc_per_node=2 -m debias_pipeline.training.distributed --model mf --dataset coat \\
        --params mf.model.loss=bpr mf.model.batch_size=2048

Every process reads the project's parameters (``conf/``, the dataset's defaults, then
``--params``, as ``kedro run`` does) and the raw data from the catalog's ``raw_data``
entry, processes the dataset in memory (``inputs.process_dataset``: the same seed gives
every process the same split), and fits the parameter block ``<model>.model`` as data-
parallel replicas (``models.distributed``): each takes its slice of every global batch
of ``batch_size`` triples, and the gradients are averaged, so W processes reproduce one.
Only rank 0 computes the validation metric (broadcast to the others, which stop at the
same epoch), evaluates on test, writes ``--output`` / ``--metrics`` and logs to MLflow
(``--mlflow``). docs/distributed.md has the commands for several machines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from debias_pipeline.config.loader import DatasetDefaultsConfigLoader
from debias_pipeline.models.contract import EpochRecord, TrainData, Validator
from debias_pipeline.models.distributed import Replicas, SharedValidator
from debias_pipeline.models.trainers import FullBatchRecommender
from debias_pipeline.training.device import resolve_device

if TYPE_CHECKING:
    from kedro.io import DataCatalog

logger = logging.getLogger(__name__)

DATA_BLOCKS = ("synthetic", "binarization", "preprocessing", "split", "evaluation", "cold_start")


def start_replicas(device: str = "auto", init_method: str = "env://") -> Replicas:
    """Join the process group of this fit and resolve this process's device, once.

    The rank, world size and local rank come from the environment ``torchrun`` sets
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; a lone process without them is rank 0 of
    1, on a free local port). ``device`` is the ``device`` parameter: where it resolves to CUDA
    (``training.device.resolve_device``), each process takes ``cuda:LOCAL_RANK`` and
    the replicas talk over NCCL; on the CPU, over gloo.

    Args:
        device: ``auto``, ``cpu`` or ``cuda`` (a ``cuda:N`` is replaced by the local rank's GPU).
        init_method: how the processes find each other (``env://``: ``MASTER_ADDR`` and
            ``MASTER_PORT``, as torchrun sets them; a ``file://`` path in tests).
    """
    if "WORLD_SIZE" not in os.environ and init_method == "env://":  # a lone process, not started by torchrun
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    return Replicas(rank=dist.get_rank(), world_size=dist.get_world_size(), device=resolved)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fit_replicated(
    model: FullBatchRecommender,
    data: TrainData,
    validation: Validator | None,
    replicas: Replicas,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FullBatchRecommender:
    """Fit ``model`` as one of ``replicas``; every replica calls it with the same model
    block, seed, data and validation split.

    The validation metric is rank 0's (``SharedValidator``) and ``on_epoch`` runs on
    rank 0 only. Every replica ends with the same weights, those of the best epoch.

    Raises:
        ValueError: For a model that is not trained in mini-batches (``loss: bpr``), or
            whose batch loss is not a mean over the triples (``batch_loss_splits``).
    """
    if not isinstance(model, FullBatchRecommender) or model.config.loss not in ("bpr", "enhanced_bpr"):
        raise ValueError(
            f"{model.name}: a data-parallel fit is for the mini-batch models (loss: bpr or enhanced_bpr), "
            f"got {type(model).__name__} with loss {getattr(model.config, 'loss', None)!r}"
        )
    if not model.batch_loss_splits():
        raise ValueError(
            f"{model.name}: its batch loss is not a mean over the batch's triples (DICE's discrepancy, a graph "
            f"model's sampled subgraph with fanouts), so replicas on slices would not reproduce it; train it in "
            f"one process{' or with fanouts: null' if hasattr(model.config, 'fanouts') else ''}"
        )
    shared = None if validation is None else SharedValidator(validation, replicas)
    model.replicas = replicas
    try:
        model.fit(data, shared, on_epoch if replicas.is_main else None)
    finally:
        model.replicas = None
    return model


def load_conf(
    conf: Path, runtime_params: Mapping[str, Any], env: str = "local"
) -> tuple[dict[str, Any], DataCatalog, dict[str, Any]]:
    """The run's parameters (``kedro run``'s: the blocks, the dataset's defaults, then
    ``runtime_params``), a catalog of the ``raw_data`` entry alone, and the MLflow
    settings (``mlflow.yml``)."""
    from kedro.io import DataCatalog  # the launcher's imports, not fit_replicated's (tests spawn replicas)

    loader = DatasetDefaultsConfigLoader(
        conf_source=str(conf),
        base_env="base",
        default_run_env=env,
        runtime_params=dict(runtime_params),
        merge_strategy={"parameters": "soft"},
        config_patterns={"mlflow": ["mlflow*", "mlflow*/**"]},  # as kedro-mlflow reads it
    )
    catalog = DataCatalog.from_config({"raw_data": loader["catalog"]["raw_data"]})
    return loader["parameters"], catalog, loader["mlflow"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m debias_pipeline.training.distributed", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model", required=True, help="the parameter block to fit: <model>.model (mf, lightgcn, dual, ...)"
    )
    parser.add_argument("--dataset", help="the dataset parameter (default: conf's)")
    parser.add_argument("--params", nargs="*", default=[], help="dotted key=value overrides, as kedro run --params")
    parser.add_argument("--conf", type=Path, default=Path("conf"), help="the project's conf folder")
    parser.add_argument("--env", default="local", help="the Kedro environment over base")
    parser.add_argument("--output", type=Path, help="rank 0 saves the fitted weights (torch.save of state_dict) here")
    parser.add_argument("--metrics", type=Path, help="rank 0 writes the validation and test metrics (JSON) here")
    parser.add_argument("--mlflow", action="store_true", help="rank 0 logs the run to MLflow (conf's tracking URI)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run one data-parallel fit from the command line; rank 0 returns its metrics."""
    from omegaconf import OmegaConf

    args = parse_args(argv)
    runtime = OmegaConf.to_container(OmegaConf.from_dotlist(list(args.params))) if args.params else {}
    if args.dataset:
        runtime["dataset"] = args.dataset
    params, catalog, mlflow_settings = load_conf(args.conf, runtime, args.env)
    replicas = start_replicas(str(params.get("device", "auto")))
    try:
        return _fit_and_report(args, params, catalog, replicas, mlflow_settings)
    finally:
        dist.destroy_process_group()


def _fit_and_report(
    args: argparse.Namespace,
    params: dict[str, Any],
    catalog: DataCatalog,
    replicas: Replicas,
    mlflow_settings: dict[str, Any],
) -> dict[str, Any] | None:
    from debias_pipeline.models.registry import build_model
    from debias_pipeline.training.inputs import process_dataset

    dataset, seed = params["dataset"], int(params["seed"])
    data = process_dataset(catalog.load("raw_data"), dataset, seed=seed, **{k: params.get(k) for k in DATA_BLOCKS})
    block = params[args.model]["model"]
    model = build_model(block, f"{args.model}.model", seed=seed, device=replicas.device)
    fit_replicated(model, data.train_data, data.evaluators.validation, replicas)
    if not replicas.is_main:
        return None
    metrics, _ = data.evaluators.test.report(model)
    report = {
        "model": model.name,
        "world_size": replicas.world_size,
        "best_epoch": model.best_epoch,
        "epochs": len(model.history),
        **{k: v for k, v in metrics.items() if v is not None},
    }
    logger.info("%s on %d replicas: %s", model.name, replicas.world_size, report)
    if args.output is not None:
        torch.save(model.state_dict(), args.output)
    if args.metrics is not None:
        args.metrics.write_text(json.dumps(report, indent=2, default=float))
    if args.mlflow:
        _log_to_mlflow(
            mlflow_settings, args.model, params, model, f"validation_{data.evaluators.validation.metric}", report
        )
    print(json.dumps(report, default=float))
    return report


def _log_to_mlflow(
    settings: dict[str, Any],
    block: str,
    params: dict[str, Any],
    model: FullBatchRecommender,
    metric: str,
    report: dict[str, Any],
) -> None:
    """One MLflow run (``mlflow.yml``'s tracking URI and experiment): the parameter
    block, the learning curves and the test metrics."""
    import mlflow  # only rank 0 with --mlflow pays for the import

    from debias_pipeline.training.tracking import flat_params, learning_curves

    mlflow.set_tracking_uri(settings["server"]["mlflow_tracking_uri"])
    mlflow.set_experiment(settings["tracking"]["experiment"]["name"])
    with mlflow.start_run(run_name=f"distributed_{block}"):
        mlflow.log_params(
            {
                **flat_params(params[block]["model"], f"{block}.model"),
                "dataset": params["dataset"],
                "seed": params["seed"],
            }
        )
        mlflow.set_tag("world_size", report["world_size"])
        for key, points in learning_curves(model, metric).items():
            for point in points:
                mlflow.log_metric(key, point["value"], step=int(point["step"]))
        mlflow.log_metrics({k: float(v) for k, v in report.items() if isinstance(v, int | float) and k != "world_size"})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
