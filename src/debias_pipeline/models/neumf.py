"""NeuMF, the fusion of GMF and MLP (He et al., WWW 2017, §3.4), from scratch or from
pretrained GMF and MLP models."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.gmf import GMFNetwork
from debias_pipeline.models.mlp import MLPConfig, MLPNetwork
from debias_pipeline.models.ncf import NCFRecommender, PairNetwork, lecun_linear

# The pretrained models NeuMF starts from: parameter block -> registry name.
PRETRAINED = {"gmf": "gmf", "mlp": "mlp"}


class NeuMFConfig(MLPConfig):
    """NeuMF hyperparameters: ``MLPConfig``'s (the GMF part has ``embedding_dim``
    factors, the MLP part the tower of ``embedding_dim`` and ``num_layers`` or
    ``hidden_sizes``), and

    Attributes:
        pretrain: start from the GMF and MLP models trained before it in the same run
            (``train_neumf``): their embeddings and layers, and the prediction layer
            ``[pretrain_alpha · h_GMF ; (1 − pretrain_alpha) · h_MLP]``; the paper then
            fine-tunes with ``optimizer: sgd``.
        pretrain_alpha: the paper's α = 0.5.
    """

    pretrain: bool = False
    pretrain_alpha: float = 0.5

    def check(self) -> None:
        super().check()
        require(0 <= self.pretrain_alpha <= 1, f"pretrain_alpha must be in [0, 1], got {self.pretrain_alpha}")


class NeuMFNetwork(PairNetwork):
    """``f(u, i) = hᵀ [p^G_u ⊙ q^G_i ; φ^MLP(p^M_u, q^M_i)] + b`` (separate embeddings)."""

    def __init__(self, n_users: int, n_items: int, config: NeuMFConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.n_users = n_users
        self.gmf = GMFNetwork(n_users, n_items, config.embedding_dim, generator, with_output=False)
        self.mlp = MLPNetwork(n_users, n_items, config, generator, with_output=False)
        self.output = lecun_linear(config.embedding_dim + config.output_dim, 1, generator)

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.gmf.features(users, items), self.mlp.features(users, items)], dim=1)

    def embedding_rows(self, users: torch.Tensor, items: torch.Tensor) -> list[torch.Tensor]:
        return self.gmf.embedding_rows(users, items) + self.mlp.embedding_rows(users, items)


def check_pretrained_sizes(neumf: NeuMFConfig, gmf: Any, mlp: Any, where: str = "neumf.model") -> None:
    """With ``pretrain``, the GMF and MLP blocks must have NeuMF's sizes.

    Raises:
        ValueError: Naming the parameters that differ.
    """
    if not neumf.pretrain:
        return
    if gmf.embedding_dim != neumf.embedding_dim:
        raise ValueError(
            f"parameter '{where}.embedding_dim' ({neumf.embedding_dim}) must equal 'gmf.model.embedding_dim' "
            f"({gmf.embedding_dim}) with '{where}.pretrain': NeuMF starts from that GMF"
        )
    if (mlp.side_dim, mlp.tower) != (neumf.side_dim, neumf.tower):
        raise ValueError(
            f"the MLP tower of '{where}' (embeddings {neumf.side_dim}, hidden {list(neumf.tower)}) must equal "
            f"that of 'mlp.model' (embeddings {mlp.side_dim}, hidden {list(mlp.tower)}) with '{where}.pretrain': "
            "set the same embedding_dim and num_layers (or hidden_sizes) in both"
        )


class NeuMF(NCFRecommender):
    """NeuMF: ``ŷ_ui = σ(hᵀ [GMF features ; MLP features])``, trained with BCE on sampled
    negatives (``ncf``). With ``pretrain``, ``fit(..., pretrained={"gmf": state,
    "mlp": state})`` takes the fitted GMF's and MLP's ``state_dict()``: embeddings and
    hidden layers are copied, the prediction layer is
    ``[α · h_GMF ; (1 − α) · h_MLP]`` with bias ``α · b_GMF + (1 − α) · b_MLP``."""

    name = "neumf"
    Config = NeuMFConfig

    def build_module(self, data: TrainData, generator: torch.Generator) -> NeuMFNetwork:
        return NeuMFNetwork(data.n_users, data.n_items, self.config, generator)

    @torch.no_grad()
    def initialize(self, module: nn.Module, pretrained: dict[str, dict[str, Any]]) -> None:
        config: NeuMFConfig = self.config
        if not config.pretrain:
            return
        missing = sorted(set(PRETRAINED) - set(pretrained))
        if missing:
            raise ValueError(f"neumf with pretrain: true needs the fitted {' and '.join(missing)} model states")
        for part, name in PRETRAINED.items():
            if pretrained[part].get("model") != name:
                raise ValueError(f"the pretrained {part} state is of model {pretrained[part].get('model')!r}, not {name!r}")
        check_pretrained_sizes(config, pretrained["gmf"]["config"], pretrained["mlp"]["config"])
        gmf, mlp = pretrained["gmf"]["weights"], pretrained["mlp"]["weights"]
        module.gmf.load_state_dict({k: v for k, v in gmf.items() if not k.startswith("output.")})
        module.mlp.load_state_dict({k: v for k, v in mlp.items() if not k.startswith("output.")})
        alpha = config.pretrain_alpha
        module.output.weight.copy_(torch.cat([alpha * gmf["output.weight"], (1 - alpha) * mlp["output.weight"]], dim=1))
        module.output.bias.copy_(alpha * gmf["output.bias"] + (1 - alpha) * mlp["output.bias"])
