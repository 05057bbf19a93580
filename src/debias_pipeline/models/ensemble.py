"""An ensemble: several models fitted on the same data, their preference scores put on
one scale per user and averaged."""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch

from debias_pipeline.config.params import BLOCK, Params, require
from debias_pipeline.models.contract import EpochRecord, Recommender, TrainData, Validator
from debias_pipeline.models.registry import build_model, model_block, model_class, register

# Hyperparameters the ensemble may set for every member whose Config has the field.
SHARED = ("epochs", "patience", "eval_every", "lr", "weight_decay", "embedding_dim")


class EnsembleConfig(Params):
    """Hyperparameters of the ensemble.

    Attributes:
        members: the members' model blocks (``name`` and hyperparameters, as under
            ``<model>.model``), each fitted with the ensemble's seed and early stopping
            of its own, so a member is the very fit ``train_<name>`` makes with that
            seed. Two equal blocks would be the same fit and are refused.
        replicas: fits of each member: the first with the ensemble's seed, the others
            with seeds drawn from it (``replica_seed``), so the mean also runs over
            initializations (bagging over seeds, on the same data).
        normalization: how a member's scores are put on one scale before the mean:
            ``z``, per user minus the mean over all items and divided by their standard
            deviation; ``rank``, per user the rank among all items over the number of
            items (ties get their mean rank).
        epochs, patience, eval_every, lr, weight_decay, embedding_dim: when set, replace that
            hyperparameter in every member whose model has it (a shorter run:
            ``best.model.epochs=20``).
    """

    members: tuple[dict[str, Any], ...] = ({"name": "mf"}, {"name": "lightgcn", "num_layers": 1})
    replicas: int = 1
    normalization: Literal["z", "rank"] = "z"
    epochs: int | None = None
    patience: int | None = None
    eval_every: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    embedding_dim: int | None = None

    def check(self) -> None:
        require(len(self.members) >= 2, f"members must list at least two model blocks, got {len(self.members)}")
        require(self.replicas >= 1, f"replicas must be >= 1, got {self.replicas}")
        blocks = self.member_blocks(BLOCK)
        seen: dict[str, int] = {}
        for index, block in enumerate(blocks):
            require(block.name != "ensemble", f"members[{index}] cannot be an ensemble")
            key = repr(sorted(block.model_dump(round_trip=True).items()))
            require(key not in seen, f"members[{index}] repeats members[{seen.get(key)}]: the same fit twice")
            seen[key] = index

    def member_blocks(self, where: str) -> list[Any]:
        """Each member's block with the shared settings applied, validated (errors name
        ``<where>.members[i].<parameter>``)."""
        found = []
        for index, member in enumerate(self.members):
            at = f"{where}.members[{index}]"
            params = dict(member)
            if "name" in params:
                fields = model_class(params["name"]).Config.model_fields
                params.update({name: getattr(self, name) for name in SHARED if getattr(self, name) is not None and name in fields})
            found.append(model_block(params, at))
        return found


def replica_seed(seed: int, replica: int) -> int:
    """The seed of a member's ``replica``-th fit: the ensemble's for the first, then a
    draw from ``SeedSequence([seed, replica])`` (distinct across seeds and replicas)."""
    if replica == 0:
        return seed
    return int(np.random.SeedSequence([seed, replica]).generate_state(1)[0] % (2**31 - 1))


def normalized(scores: np.ndarray, how: str) -> np.ndarray:
    """``scores`` (n_users, n_items) on one scale per row (see ``EnsembleConfig``), float64."""
    scores = np.asarray(scores, dtype=np.float64)
    if how == "rank":
        from scipy import stats  # scipy.stats takes ~0.7 s to import: only when needed

        return stats.rankdata(scores, axis=1) / scores.shape[1]
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def mean_history(histories: list[list[EpochRecord]]) -> list[EpochRecord]:
    """Per epoch, the mean train loss and the mean validation score (over the members
    with one at that epoch, else None) of ``histories``, each history's last record
    standing for the epochs after it ended."""
    found = []
    for epoch in range(1, max(len(h) for h in histories) + 1):
        records = [h[min(epoch, len(h)) - 1] for h in histories if h]
        scores = [r.validation_score for r in records if r.validation_score is not None]
        found.append(EpochRecord(epoch, float(np.mean([r.train_loss for r in records])), float(np.mean(scores)) if scores else None))
    return found


class Ensemble(Recommender):
    """The mean of the members' normalized preference scores over all their fits
    (``EnsembleConfig``); ``members`` holds the fitted models, replicas of a member
    next to each other.

    ``history`` holds, per epoch, the mean of the members' train losses and of their
    validation scores, a member that stopped early holding its last values (not the
    ensemble's own validation score); each member's own is in ``member_histories``.
    """

    name: ClassVar[str] = "ensemble"
    Config = EnsembleConfig

    def __init__(self, config: EnsembleConfig, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self.members: list[Recommender] = []
        self.member_histories: list[list[EpochRecord]] = []

    def _build_members(self) -> list[Recommender]:
        """Every fit: each member block ``replicas`` times, member by member."""
        return [
            build_model(block, f"ensemble.members[{index}]", seed=replica_seed(self.seed, replica), device=self.device)
            for index, block in enumerate(self.config.member_blocks("ensemble"))
            for replica in range(self.config.replicas)
        ]

    def fit(self, data: TrainData, validation: Validator | None = None) -> Self:
        members = [member.fit(data, validation) for member in self._build_members()]
        self.members, self.member_histories = members, [list(m.history) for m in members]
        self.history = mean_history(self.member_histories)
        self.best_epoch = None  # each member keeps its own
        return self

    @property
    def fits(self) -> list[Recommender]:
        return self.members

    def _is_fitted(self) -> bool:
        return bool(self.members)

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        how = self.config.normalization
        total = sum(normalized(member.score(users), how) for member in self.members)
        return (total / len(self.members)).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return self._state(
            best_epoch=None,  # each fit keeps its own
            members=[member.state_dict() for member in self.members],
            member_histories=copy.deepcopy(self.member_histories),
        )

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        self._check_state(state)
        members = self._build_members()
        if len(members) != len(state["members"]):
            raise ValueError(f"the state holds {len(state['members'])} fits, the configuration {len(members)}")
        self.members = [member.load_state_dict(member_state, data) for member, member_state in zip(members, state["members"], strict=True)]
        self.member_histories = copy.deepcopy(state["member_histories"])
        self.history = mean_history(self.member_histories)
        self.best_epoch = None
        return self


# The registry holds the single models; the ensemble, built from their blocks, adds itself.
register(Ensemble)
