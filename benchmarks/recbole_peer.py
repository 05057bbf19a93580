"""RecBole's LightGCN training epoch, run the way a RecBole user runs it, as a contender.

``recbole_lightgcn_epoch`` writes the train positives to an atomic ``.inter`` file in a
temporary folder, loads it with RecBole's ``Dataset``, splits it with
``data_preparation`` (every positive goes to training: ``RS`` ratios 1/0/0) and trains
RecBole's own ``LightGCN`` with its ``Trainer._train_epoch``: per batch its
``TrainDataLoader`` gathers the positives, draws one uniform negative per positive with
its ``Sampler``, and the trainer calls ``calculate_loss``, ``backward`` and Adam's
``step``. Configuration: CPU, no evaluation, no checkpoint (the trainer's folder is the
temporary one), no TensorBoard writer, no log handlers, no network.

RecBole keeps id 0 for padding, so user ``u`` is RecBole user ``u + 1`` and item ``i``
is RecBole item ``i + 1``; every user and item of the matrix is kept, even one without
positives, and the two padding rows are isolated nodes of the graph.

Where it does different work from the project's LightGCN epoch:

* negatives: RecBole's ``Sampler`` draws with NumPy's global generator and redraws an
  item the user has in train, checking the draws against a Python set per user in a
  Python loop over the batch;
* propagation: ``torch.sparse.mm`` on the normalized adjacency as an uncoalesced
  ``torch.sparse`` COO tensor, all layers recomputed for the whole graph every batch,
  in float32, with stock autograd;
* layer combination: the mean of the layer outputs, including layer 0;
* regularization: ``reg_weight`` times RecBole's ``EmbLoss`` (``require_pow`` off):
  the sum of the Frobenius norms, not squared, of the batch's three layer-0 embedding
  matrices (users, positives, negatives), divided by the batch size;
* initialization: Xavier uniform.

RecBole 1.2.1 needs these shims here, applied only when missing: a stand-in
``torch.utils.tensorboard.SummaryWriter`` when ``tensorboard`` is not installed (RecBole
imports it at start-up, nothing here writes to it), ``scipy.sparse.dok_matrix._update``
(removed from SciPy 1.12 on, used to build LightGCN's adjacency), a ``Config`` that
skips ``compatibility_settings`` (it reads ``np.float_``, gone from NumPy 2, to set
aliases that only RecBole's evaluation metrics use), and, around ``Config``, hiding
the command line (it would read ``--key=value`` arguments as settings) and restoring
``CUDA_VISIBLE_DEVICES``, which it sets for the whole process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import scipy.sparse as sp

USER_FIELD = "user_id"
ITEM_FIELD = "item_id"
REG_WEIGHT = 1e-4
LEARNING_RATE = 1e-3
_DATASET = "peer"


class _NullSummaryWriter:
    """Takes every TensorBoard call and does nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def _shim() -> None:
    """Make RecBole 1.2.1 importable and its LightGCN buildable on this stack."""
    if importlib.util.find_spec("tensorboard") is None and "torch.utils.tensorboard" not in sys.modules:
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = _NullSummaryWriter  # type: ignore[attr-defined]
        sys.modules["torch.utils.tensorboard"] = stub
    if not hasattr(sp.dok_matrix, "_update"):

        def _update(self: sp.dok_matrix, data: Mapping[tuple[int, int], float]) -> None:
            self._dict.update(data)

        sp.dok_matrix._update = _update  # type: ignore[attr-defined]


def _import_recbole() -> types.SimpleNamespace | None:
    """RecBole's pieces used here, or None when it does not import."""
    _shim()
    try:
        from recbole.config import Config
        from recbole.data import data_preparation
        from recbole.data.dataset import Dataset
        from recbole.model.general_recommender.lightgcn import LightGCN
        from recbole.trainer import Trainer
        from recbole.utils import init_seed
    except (ImportError, AttributeError):  # not installed, or a version this stack breaks
        return None
    return types.SimpleNamespace(
        Config=Config, data_preparation=data_preparation, Dataset=Dataset, LightGCN=LightGCN, Trainer=Trainer,
        init_seed=init_seed,
    )


_RECBOLE: types.SimpleNamespace | None = None
_TRIED = False


def _recbole() -> types.SimpleNamespace:
    """RecBole's pieces, imported once; ImportError when RecBole is not installed."""
    global _RECBOLE, _TRIED
    if not _TRIED:
        _RECBOLE, _TRIED = _import_recbole(), True
    if _RECBOLE is None:
        raise ImportError("recbole does not import")
    return _RECBOLE


def available() -> bool:
    """Whether RecBole (and what its LightGCN path needs) imports."""
    try:
        _recbole()
    except ImportError:
        return False
    return True


def _dataset(config: Any, n_users: int, n_items: int) -> Any:
    """RecBole's ``Dataset`` on the atomic files, with user ``u`` as id ``u + 1`` and item ``i`` as ``i + 1``.

    RecBole numbers tokens in the order they first appear; this numbers them by value
    instead and keeps every user and item, so the ids are those of the matrix.
    """
    base = _recbole().Dataset
    sizes = {USER_FIELD: n_users, ITEM_FIELD: n_items}

    class MatrixIdDataset(base):  # type: ignore[misc, valid-type]
        def _remap(self, remap_list: list[tuple[pd.DataFrame, str, Any]]) -> None:
            field = remap_list[0][1] if remap_list else None
            if field not in sizes:
                super()._remap(remap_list)
                return
            tokens = np.array(["[PAD]"] + [str(k) for k in range(sizes[field])])
            self.field2id_token[field] = tokens
            self.field2token_id[field] = {token: k for k, token in enumerate(tokens)}
            for feat, name, _ in remap_list:
                feat[name] = feat[name].astype(np.int64).to_numpy() + 1

    return MatrixIdDataset(config)


def _config(folder: str, dim: int, layers: int, batch_size: int, seed: int) -> Any:
    """RecBole's ``Config`` for LightGCN training only, on CPU, from ``folder``."""
    settings = {
        "data_path": folder,
        "checkpoint_dir": os.path.join(folder, "saved"),
        "USER_ID_FIELD": USER_FIELD,
        "ITEM_ID_FIELD": ITEM_FIELD,
        "load_col": {"inter": [USER_FIELD, ITEM_FIELD]},
        "embedding_size": dim,
        "n_layers": layers,
        "reg_weight": REG_WEIGHT,
        "require_pow": False,
        "learner": "adam",
        "learning_rate": LEARNING_RATE,
        "weight_decay": 0.0,
        "train_batch_size": batch_size,
        "train_neg_sample_args": {
            "distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0,
        },
        "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "group_by": "user", "order": "RO", "mode": "full"},
        "use_gpu": False,
        "gpu_id": "",
        "device": "cpu",
        "worker": 0,
        "seed": seed,
        "reproducibility": True,
        "state": "ERROR",
        "show_progress": False,
        "shuffle": True,
        "epochs": 1,
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
    }

    class TrainingConfig(_recbole().Config):  # type: ignore[misc, name-defined]
        def compatibility_settings(self) -> None:
            """Leave NumPy alone: RecBole's aliases need ``np.float_`` (gone in NumPy 2), and
            only its evaluation metrics use them."""

    visible, argv = os.environ.get("CUDA_VISIBLE_DEVICES"), sys.argv
    sys.argv = argv[:1]  # RecBole reads ``--key=value`` settings from the command line
    try:
        return TrainingConfig(model=_recbole().LightGCN, dataset=_DATASET, config_dict=settings)
    finally:
        sys.argv = argv
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible


def _write_inter(folder: str, train: sp.csr_matrix) -> None:
    """The positives of ``train`` as RecBole's atomic ``<dataset>.inter`` file under ``folder``."""
    os.makedirs(os.path.join(folder, _DATASET), exist_ok=True)
    coo = train.tocoo()
    table = pd.DataFrame(
        {f"{USER_FIELD}:token": coo.row.astype(np.int64), f"{ITEM_FIELD}:token": coo.col.astype(np.int64)}
    )
    table.to_csv(os.path.join(folder, _DATASET, f"{_DATASET}.inter"), sep="\t", index=False)


def recbole_lightgcn_epoch(
    train: sp.csr_matrix, dim: int, layers: int, batch_size: int, repeats_batches: int | None, seed: int = 0
) -> Callable[[int | None], None]:
    """Build RecBole's data pipeline, LightGCN and trainer on ``train``; return ``step(max_batches)``.

    ``step(n)`` trains on the next ``n`` batches of the loader's current epoch, going on
    into a new epoch (RecBole reshuffles) when it runs out; ``step(None)`` trains one
    whole epoch. ``repeats_batches`` is how many batches each call will run (None: whole
    epochs): the epoch's loader is opened in advance, and reopened at the end of a call
    when fewer batches than that are left, so that no call is split across two epochs.
    """
    rb = _recbole()
    train = sp.csr_matrix(train)
    n_users, n_items = train.shape
    if train.nnz == 0:
        raise ValueError("the train matrix has no positives")
    with tempfile.TemporaryDirectory(prefix="recbole_peer_") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write_inter(folder, train)
        config = _config(folder, dim, layers, batch_size, seed)
        rb.init_seed(config["seed"], config["reproducibility"])
        dataset = _dataset(config, n_users, n_items)
        train_data, _, _ = rb.data_preparation(config, dataset)
        rb.init_seed(config["seed"], config["reproducibility"])
        model = rb.LightGCN(config, train_data._dataset).to(config["device"])
        with mock.patch("recbole.trainer.trainer.get_tensorboard", lambda logger: _NullSummaryWriter()):
            trainer = rb.Trainer(config, model)
    n_per_epoch = len(train_data)
    state: dict[str, Any] = {"batches": None, "left": 0, "epoch": 0}

    def open_epoch() -> None:
        state["batches"], state["left"] = iter(train_data), n_per_epoch

    def next_batches(count: int) -> Iterator[Any]:
        for _ in range(count):
            if state["left"] == 0:
                open_epoch()
            state["left"] -= 1
            yield next(state["batches"])

    def step(max_batches: int | None) -> None:
        """Train on ``max_batches`` batches, or on one whole epoch when None."""
        state["epoch"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # its torch.cuda.amp.GradScaler, disabled on CPU
            trainer._train_epoch(train_data if max_batches is None else next_batches(max_batches), state["epoch"])
        if max_batches is not None and repeats_batches is not None and state["left"] < repeats_batches:
            open_epoch()

    if repeats_batches is not None:
        open_epoch()
    return step
