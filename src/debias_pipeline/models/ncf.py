"""Neural collaborative filtering (He et al., "Neural Collaborative Filtering", WWW
2017): what GMF, MLP and NeuMF share.

A model of this family scores a (user, item) pair with a network over the pair's
embeddings, ``ŷ_ui = σ(f(u, i))``. It is trained on each train positive and
``num_negatives`` sampled non-positives of its user, drawn anew every epoch, with the
binary cross-entropy of ``f`` against those labels (``sampled_bce_loss``), on shuffled
mini-batches of ``batch_size`` examples (the paper: 4 negatives, batch 256, Adam 1e-3).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Literal, Self

import numpy as np
import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.configs import TrainingConfig
from debias_pipeline.models.contract import TrainData, Validator
from debias_pipeline.models.losses import sampled_bce_loss
from debias_pipeline.models.minibatch import positive_pairs
from debias_pipeline.models.sampling import build_negative_sampler
from debias_pipeline.models.trainers import NetworkRecommender, _index, run_with_early_stopping


class NCFConfig(TrainingConfig):
    """Hyperparameters of the NCF family (the paper's defaults).

    Attributes:
        embedding_dim: predictive factors: GMF's embedding size and the width of the
            MLP tower's last layer (the paper: 8, 16, 32, 64).
        loss: ``bce`` on each positive and its sampled negatives (the only loss).
        num_negatives: sampled non-positives per positive and epoch (the paper: 4).
        batch_size: examples (positives and negatives) per step (the paper: 256).
        optimizer: ``adam`` or ``sgd`` (plain SGD; the paper fine-tunes a pretrained
            NeuMF with it).
        weight_decay: λ · mean over the batch of the squared norms of the example's
            user and item embedding rows (the paper: 0).
    """

    embedding_dim: int = 8
    loss: Literal["bce"] = "bce"
    num_negatives: int = 4
    batch_size: int = 256
    lr: float = 0.001
    weight_decay: float = 0.0
    optimizer: Literal["adam", "sgd"] = "adam"
    epochs: int = 50
    patience: int = 5

    def check(self) -> None:
        super().check()
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.num_negatives >= 1, f"num_negatives must be >= 1, got {self.num_negatives}")


def glorot_linear(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    """A linear map with Glorot-uniform weights and zero bias (Keras's ``Dense`` default,
    which the NCF code keeps for the hidden layers), drawn from ``generator`` only."""
    linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
    nn.init.xavier_uniform_(linear.weight, generator=generator)
    nn.init.zeros_(linear.bias)
    return linear


def lecun_linear(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    """A linear map with LeCun-uniform weights, U(±√(3 / fan_in)), and zero bias (the NCF
    code's prediction layer)."""
    linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(linear.weight, -bound, bound, generator=generator)
    nn.init.zeros_(linear.bias)
    return linear


def normal_embedding(rows: int, dim: int, generator: torch.Generator) -> nn.Embedding:
    """An embedding table drawn from N(0, 0.01²) (the NCF code's initialization)."""
    table = nn.utils.skip_init(nn.Embedding, rows, dim)
    nn.init.normal_(table.weight, 0.0, 0.01, generator=generator)
    return table


# Pairs per forward pass when scoring: bounds the activations (the widest NCF tower,
# 64 factors and 3 layers, is 512 wide: 256 MB of float32 at this size).
SCORE_CHUNK_PAIRS = 1 << 17


class PairNetwork(nn.Module):
    """A network scoring (user, item) pairs: ``forward(users, items)`` -> logits (n,),
    ``output(features(users, items))``; ``user_embedding`` and ``item_embedding`` are
    its tables (GMF, MLP)."""

    @abstractmethod
    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The prediction layer's input (n, width)."""

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(users, items)).squeeze(-1)

    def embedding_rows(self, users: torch.Tensor, items: torch.Tensor) -> list[torch.Tensor]:
        """The embedding rows of the pairs, for the L2 term."""
        return [self.user_embedding(users), self.item_embedding(items)]


class NCFRecommender(NetworkRecommender):
    """A model of the NCF family; subclasses build their ``PairNetwork``."""

    Config = NCFConfig

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self.n_items: int | None = None

    def initialize(self, module: nn.Module, pretrained: dict[str, dict[str, Any]]) -> None:
        """Set the freshly built ``module`` from other fitted models' states (NeuMF's
        pretraining); a model without pretraining refuses any."""
        if pretrained:
            raise ValueError(f"{self.name} takes no pretrained weights, got {sorted(pretrained)}")

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Any = None,
        pretrained: dict[str, dict[str, Any]] | None = None,
    ) -> Self:
        config: NCFConfig = self.config
        generator = torch.Generator().manual_seed(self.seed)
        self.n_items = data.n_items
        module = self.build_module(data, generator)
        self.initialize(module, pretrained or {})
        self.module = module.to(self.device)
        if config.optimizer == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(self.module.parameters(), lr=config.lr)
        else:
            optimizer = torch.optim.SGD(self.module.parameters(), lr=config.lr)
        run_epoch = SampledBCEEpochs(self, data, optimizer)
        run_with_early_stopping(self, lambda: float(run_epoch()), validation, on_epoch)
        return self

    def batch_loss(self, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``sampled_bce_loss`` of the examples + ``weight_decay`` x the mean over them
        of their embedding rows' squared norms."""
        loss = sampled_bce_loss(self.module(users, items), labels)
        if self.config.weight_decay > 0:
            rows = self.module.embedding_rows(users, items)
            loss = loss + self.config.weight_decay * sum(row.pow(2).sum() for row in rows) / users.numel()
        return loss

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        self.n_items = data.n_items
        return super().load_state_dict(state, data)

    @torch.no_grad()
    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self._require_fitted()
        u, i = _index(users, self.device), _index(items, self.device)
        step = SCORE_CHUNK_PAIRS
        return torch.cat([self.module(u[s : s + step], i[s : s + step]) for s in range(0, u.numel(), step)]).cpu().numpy()

    @torch.no_grad()
    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        n_users = self.module.n_users
        users = np.arange(n_users) if users is None else np.asarray(users, dtype=np.int64)
        pairs_users = np.repeat(users, self.n_items)
        pairs_items = np.tile(np.arange(self.n_items), users.size)
        return self.score_pairs(pairs_users, pairs_items).reshape(users.size, self.n_items)


class SampledBCEEpochs:
    """One epoch of an NCF model per call: every train positive with label 1 and
    ``num_negatives`` fresh non-positives of its user with label 0, shuffled, in
    mini-batches; returns the mean example loss.

    The shuffling and the negatives come from one generator on the model's device,
    seeded with the model's seed (same seed, same numbers on the CPU).
    """

    def __init__(self, model: NCFRecommender, data: TrainData, optimizer: torch.optim.Optimizer) -> None:
        config: NCFConfig = model.config
        self.model, self.optimizer = model, optimizer
        self.batch_size, self.num_negatives = config.batch_size, config.num_negatives
        self.generator = torch.Generator(device=model.device).manual_seed(model.seed)
        self.sampler = build_negative_sampler(
            config.negative_sampling, data.interactions, self.generator, hard_pool_size=config.hard_pool_size
        )
        self.users, self.items = positive_pairs(self.sampler.train, model.device)  # (n_positives,) each

    @torch.no_grad()
    def _refresh_sampler(self) -> None:
        module = self.model.module
        n_items = self.model.n_items
        all_items = torch.arange(n_items, device=self.users.device)

        def score_users(users: torch.Tensor) -> torch.Tensor:
            step = max(1, SCORE_CHUNK_PAIRS // n_items)
            parts = [
                module(chunk.repeat_interleave(n_items), all_items.repeat(chunk.numel())).view(chunk.numel(), n_items)
                for chunk in users.split(step)
            ]
            return torch.cat(parts)

        self.sampler.refresh(score_users)

    def __call__(self) -> torch.Tensor:
        model, optimizer = self.model, self.optimizer
        if self.sampler.needs_scores:
            model.module.eval()
            self._refresh_sampler()
        model.module.train()
        negative_users = self.users.repeat_interleave(self.num_negatives)
        users = torch.cat([self.users, negative_users])
        items = torch.cat([self.items, self.sampler.sample(negative_users)])
        labels = torch.cat([torch.ones_like(self.users), torch.zeros_like(negative_users)]).to(torch.float32)
        n = users.numel()
        order = torch.randperm(n, generator=self.generator, device=users.device)
        total = torch.zeros((), dtype=torch.float64, device=users.device)
        for start in range(0, n, self.batch_size):
            batch = order[start : start + self.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = model.batch_loss(users[batch], items[batch], labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.detach() * batch.numel()
        return total / n

