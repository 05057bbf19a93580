"""The training machinery every model shares: the epoch loop with early stopping
(``run_with_early_stopping``) and the base classes of the models whose state is one
``nn.Module`` (``ModuleRecommender``), that score by their network
(``NetworkRecommender``) or by cached preference embeddings, trained full-batch or in
mini-batches (``FullBatchRecommender``)."""

from __future__ import annotations

import copy
import logging
import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from debias_pipeline.models.configs import TrainingConfig
from debias_pipeline.models.contract import EpochRecord, Recommender, TrainData, Validator
from debias_pipeline.models.distributed import Replicas
from debias_pipeline.models.early_stopping import EarlyStopping
from debias_pipeline.models.minibatch import MiniBatchEpochs

logger = logging.getLogger(__name__)


class ModuleRecommender(Recommender):
    """A model whose fitted state is one ``nn.Module`` (``build_module``), saved and
    restored by its ``state_dict``; ``_cache_embeddings`` readies it for scoring after
    fitting or loading."""

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self.module: nn.Module | None = None

    @abstractmethod
    def build_module(self, data: TrainData, generator: torch.Generator) -> nn.Module:
        """Create the parameters (embeddings start as N(0, 0.01²) unless stated)."""

    @abstractmethod
    def _cache_embeddings(self) -> None:
        """Ready the fitted module for scoring (called after every validation, fit and load)."""

    @abstractmethod
    def _is_fitted(self) -> bool:
        """Whether ``_cache_embeddings`` has run."""

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        self._check_state(state)
        self.module = self.build_module(data, torch.Generator().manual_seed(self.seed)).to(self.device)
        self.module.load_state_dict(state["weights"])
        self.best_epoch = state.get("best_epoch")
        self._cache_embeddings()
        return self

    def state_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return self._state(
            best_epoch=self.best_epoch, weights={k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        )

class NetworkRecommender(ModuleRecommender):
    """A model that scores by running its network (NCF, the autoencoders), so nothing is
    cached after fitting but the network's evaluation mode."""

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._fitted = False

    def _cache_embeddings(self) -> None:
        self.module.eval()
        self._fitted = True

    def _is_fitted(self) -> bool:
        return self._fitted

class FullBatchRecommender(ModuleRecommender):
    """A gradient model trained full-batch over all |U| x |I| pairs with Adam.

    Subclasses build an ``nn.Module`` from the data, define the loss over all pairs and
    the preference embeddings. This class owns the loop: one Adam step per epoch,
    validation NDCG every ``eval_every`` epochs, early stopping with ``patience`` and
    restoration of the best epoch's weights.
    """

    scores_by_embeddings = True

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._user_emb: torch.Tensor | None = None  # (n_users, d) preference, cached after fit
        self._item_emb: torch.Tensor | None = None  # (n_items, d)
        # A data-parallel fit's replicas (``training.distributed``): None trains in this process alone.
        self.replicas: Replicas | None = None

    @abstractmethod
    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """Training loss over all pairs; ``targets`` is the dense (n_users, n_items) Y."""

    @abstractmethod
    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user (n_users, d) and item (n_items, d) preference embeddings."""

    def batch_loss_splits(self) -> bool:
        """Whether ``batch_loss`` is a mean over the batch's triples plus terms that do not
        depend on them, so that data-parallel replicas, each on a slice of the batch,
        reproduce its gradient exactly (``models.distributed``)."""
        return True

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Loss of a batch of sampled triples (``loss: bpr``); (batch,) ids on the device."""
        raise NotImplementedError(f"{self.name} has no mini-batch loss; train it with loss: bce")

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        config: TrainingConfig = self.config
        generator = torch.Generator().manual_seed(self.seed)
        self.module = self.build_module(data, generator).to(self.device)
        replicas = self.replicas
        if config.loss in ("bpr", "enhanced_bpr"):
            if getattr(config, "optimizer", "adam") in ("sparse_adam", "sgd"):  # MF: only the batch's rows
                optimizer = None
                reduced = None if replicas is None else replicas.row_gradients(self.row_gradients, config.embedding_dim)
                run_epoch = MiniBatchEpochs(self, data, None, self.row_stepper(reduced))
            else:  # hundreds of steps per epoch: Adam's single fused kernel per parameter pays
                optimizer = torch.optim.Adam(self.module.parameters(), lr=config.lr, fused=True)
                step = None if replicas is None else replicas.batch_step(self, optimizer)
                run_epoch = MiniBatchEpochs(self, data, optimizer, step)
        elif replicas is not None:
            raise ValueError(
                f"{self.name}: a data-parallel fit needs mini-batches (loss: bpr), got loss {config.loss!r}"
            )
        else:
            optimizer = torch.optim.Adam(self.module.parameters(), lr=config.lr)
            run_epoch = self._full_batch_epochs(data, optimizer)
        plateau = getattr(config, "lr_plateau", None)
        scheduler = None
        if plateau is not None:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=plateau.factor, patience=plateau.patience, min_lr=plateau.min_lr
            )
        epoch_loss = (lambda: float(run_epoch())) if replicas is None else (lambda: replicas.epoch_loss(run_epoch()))
        run_with_early_stopping(self, epoch_loss, validation, on_epoch, None if scheduler is None else scheduler.step)
        return self

    def _full_batch_epochs(self, data: TrainData, optimizer: torch.optim.Optimizer) -> Callable[[], torch.Tensor]:
        """One Adam step on the loss over all pairs per call (``loss: bce``)."""
        check_dense_size(self.name, data, "use loss: bpr (mini-batches of sampled triples)")
        targets = torch.as_tensor(data.interactions.toarray(), dtype=torch.float32, device=self.device)
        clip = getattr(self.config, "grad_clip_norm", None)

        def run_epoch() -> torch.Tensor:
            self.module.train()
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(targets)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
            optimizer.step()
            return loss.detach()

        return run_epoch

    @torch.no_grad()
    def _cache_embeddings(self) -> None:
        self.module.eval()
        users, items = self.preference_embeddings()
        self._user_emb, self._item_emb = users.detach(), items.detach()

    def _is_fitted(self) -> bool:
        return self._user_emb is not None

    @torch.no_grad()
    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        user_emb = self._user_emb if users is None else self._user_emb[_index(users, self.device)]
        return (user_emb @ self._item_emb.T).cpu().numpy()

    @torch.no_grad()
    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self._require_fitted()
        u = self._user_emb[_index(users, self.device)]
        v = self._item_emb[_index(items, self.device)]
        return (u * v).sum(dim=1).cpu().numpy()

# Largest |U| x |I| a model densifies (Y and its scores, float32): 2^28 pairs, 1 GiB
# per table; beyond it the all-pairs losses need several such tables at once.
DENSE_PAIRS_LIMIT = 1 << 28

def check_dense_size(model: str, data: TrainData, remedy: str) -> None:
    """Refuse, before training, a full-batch fit over more than ``DENSE_PAIRS_LIMIT`` pairs.

    Raises:
        ValueError: Naming the model, the size and ``remedy``.
    """
    pairs = data.n_users * data.n_items
    if pairs > DENSE_PAIRS_LIMIT:
        raise ValueError(
            f"{model}: a full-batch fit over all {data.n_users:,} x {data.n_items:,} = {pairs:,} pairs needs "
            f"at least {pairs * 4 * 3 / 2**30:.1f} GiB; {remedy}"
        )

def _index(ids: np.ndarray, device: torch.device) -> torch.Tensor:
    # np.array copies: pandas hands out read-only views, which torch refuses to wrap.
    return torch.from_numpy(np.array(ids, dtype=np.int64)).to(device)

def sparse_to_torch(matrix: sp.spmatrix, device: torch.device, dtype: type = np.float32) -> torch.Tensor:
    """A scipy sparse matrix as a torch sparse CSR tensor (float32, or ``dtype``) on ``device``."""
    csr = sp.csr_matrix(matrix, dtype=dtype)
    return torch.sparse_csr_tensor(
        torch.as_tensor(csr.indptr, dtype=torch.int64),
        torch.as_tensor(csr.indices, dtype=torch.int64),
        torch.as_tensor(csr.data),
        size=csr.shape,
    ).to(device)

def run_with_early_stopping(
    model: Any,
    run_epoch: Callable[[], float],
    validation: Validator | None,
    on_epoch: Callable[[EpochRecord], None] | None,
    on_validation: Callable[[float], Any] | None = None,
) -> None:
    """The epoch loop every iterative model shares.

    ``run_epoch`` trains one epoch (an Adam step, a mini-batch pass, an ALS or EM
    sweep) and returns its training loss. The validation signal (``validation.score``)
    is evaluated every ``eval_every`` epochs; early stopping follows its mean over the
    last ``validation.window`` evaluations (1 when the validator has no ``window``):
    after ``patience`` evaluations without a better mean the loop stops, and the weights
    of the evaluation that ended the best window are restored. ``model`` has ``module``,
    ``config`` (``epochs``, ``patience``, ``eval_every``), ``history``, ``best_epoch``
    and ``_cache_embeddings()``. ``on_validation`` gets every validation score (a
    learning-rate scheduler's ``step``).
    """
    config = model.config
    model.history = []
    best_state = None
    rule = EarlyStopping(config.patience, int(getattr(validation, "window", 1)))
    bar = tqdm(range(1, config.epochs + 1), desc=model.name, disable=None, leave=False)
    for epoch in bar:
        record = EpochRecord(epoch=epoch, train_loss=run_epoch())
        if not math.isfinite(record.train_loss):
            raise FloatingPointError(f"{model.name}: training loss is {record.train_loss} at epoch {epoch}")
        if validation is not None and epoch % config.eval_every == 0:
            model._cache_embeddings()
            record.validation_score = validation.score(model)
            if rule.update(record.validation_score):
                model.best_epoch = epoch
                best_state = copy.deepcopy(model.module.state_dict())
            if on_validation is not None:
                on_validation(record.validation_score)
            logger.debug(
                "%s epoch %d: train loss %.5f, validation %s %.4f (best %.4f at epoch %s)",
                model.name,
                epoch,
                record.train_loss,
                validation.metric,
                record.validation_score,
                rule.best,
                model.best_epoch,
            )
            bar.set_postfix(loss=f"{record.train_loss:.4f}", validation=f"{record.validation_score:.4f}")
        model.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if validation is not None and rule.stop:
            break
    if best_state is not None:
        model.module.load_state_dict(best_state)
    else:
        model.best_epoch = model.history[-1].epoch
    model._cache_embeddings()
