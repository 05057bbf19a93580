"""The explicit model registry: name -> class.

Every single model is listed here; ``ensemble`` (``ensemble.py``), which builds its
members through this registry, adds itself with ``register`` when the ``models``
package is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ConfigDict, PrivateAttr

from debias_pipeline.config.params import BLOCK, Params, build_config
from debias_pipeline.evaluation.protocols import PROTOCOLS
from debias_pipeline.models.cause import CausE
from debias_pipeline.models.contract import Recommender
from debias_pipeline.models.dice import DICE
from debias_pipeline.models.dr_jl import DRJL
from debias_pipeline.models.dual import DualModel
from debias_pipeline.models.ease import EASE
from debias_pipeline.models.expomf import ExpoMF
from debias_pipeline.models.gat import GAT
from debias_pipeline.models.gcn import GCN
from debias_pipeline.models.gmf import GMF
from debias_pipeline.models.graphsage import GraphSAGE
from debias_pipeline.models.itemknn import ItemKNN
from debias_pipeline.models.lightgcn import LightGCN
from debias_pipeline.models.macr import MACR
from debias_pipeline.models.mf import MF
from debias_pipeline.models.mf_ips import MFIPS
from debias_pipeline.models.mlp import MLP
from debias_pipeline.models.mostpop import MostPop
from debias_pipeline.models.multdae import MultDAE
from debias_pipeline.models.multvae import MultVAE
from debias_pipeline.models.neumf import NeuMF
from debias_pipeline.models.ngcf import NGCF
from debias_pipeline.models.pda import PDA
from debias_pipeline.models.pinsage import PinSage
from debias_pipeline.models.recrec import ReCRec
from debias_pipeline.models.relmf import RelMF
from debias_pipeline.models.socialgcn import SocialGCN
from debias_pipeline.models.wmf import WMF

MODELS: dict[str, type[Recommender]] = {
    "mf": MF,
    "lightgcn": LightGCN,
    "dual": DualModel,
    "mostpop": MostPop,
    "itemknn": ItemKNN,
    "ease": EASE,
    "ngcf": NGCF,
    "wmf": WMF,
    "expomf": ExpoMF,
    "relmf": RelMF,
    "mf_ips": MFIPS,
    "dr_jl": DRJL,
    "cause": CausE,
    "recrec": ReCRec,
    "gmf": GMF,
    "mlp": MLP,
    "neumf": NeuMF,
    "multvae": MultVAE,
    "multdae": MultDAE,
    "gcn": GCN,
    "gat": GAT,
    "graphsage": GraphSAGE,
    "pinsage": PinSage,
    "socialgcn": SocialGCN,
    "pda": PDA,
    "macr": MACR,
    "dice": DICE,
}


def register(cls: type[Recommender]) -> None:
    """Add ``cls`` under its ``name``.

    Raises:
        ValueError: When the name is taken by another class.
    """
    if MODELS.setdefault(cls.name, cls) is not cls:
        raise ValueError(f"model name {cls.name!r} is already registered for {MODELS[cls.name].__name__}")


def model_class(name: str) -> type[Recommender]:
    """The class registered under ``name``.

    Raises:
        ValueError: For an unknown name, listing the valid ones.
    """
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}") from None


class ModelBlock(Params):
    """A model's parameter block (``<namespace>.model``): the registry ``name`` and that
    model's hyperparameters, checked against its ``Config`` (``config``).

    The type hint of the training node's ``params:<namespace>.model`` input, so Kedro
    checks the block before the first node runs.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    name: str
    _config: Params = PrivateAttr()

    def check(self) -> None:
        cls = model_class(self.name)
        self._config = build_config(cls.Config, self.model_extra, BLOCK)

    @property
    def model_cls(self) -> type[Recommender]:
        return model_class(self.name)

    @property
    def config(self) -> Params:
        """The model's ``Config``, validated."""
        return self._config

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """``name`` and every hyperparameter of the model, defaults filled in, as YAML
        writes them (lists): the yml keeps only what differs from the ``Config``, yet
        what MLflow logs and what tells two fits apart is the whole configuration."""
        return {"name": self.name, **self._config.model_dump(**{**kwargs, "mode": "json"})}


def model_block(params: Mapping[str, Any] | ModelBlock, where: str) -> ModelBlock:
    """The block ``params`` checked as a model block (errors name ``where``)."""
    if isinstance(params, Mapping) and "name" not in params:
        raise ValueError(f"parameter '{where}.name' is missing; valid models: {', '.join(sorted(MODELS))}")
    return build_config(ModelBlock, params, where)


def build_model(params: Mapping[str, Any] | ModelBlock, where: str, *, seed: int, device: torch.device) -> Recommender:
    """Build an unfitted model from its parameter block.

    Args:
        params: The block, e.g. ``{"name": "mf", "embedding_dim": 200, ...}``, or the
            ``ModelBlock`` Kedro validated it into.
        where: The block's dotted name in the parameters, for error messages.
        seed: Seed of the model's initialization.
        device: Device it trains on.
    """
    block = model_block(params, where)
    return block.model_cls(block.config, seed=seed, device=device)


def check_model_fits_protocol(model_class: type, protocol: str, where: str = "model") -> None:
    """``strong_generalization`` scores users the model never trained on: only models
    that fold in a new user's clicks (``supports_fold_in``) can be evaluated by it.

    Raises:
        ValueError: Naming the model and the protocol.
    """
    if PROTOCOLS[protocol].kind == "fold_in" and not getattr(model_class, "supports_fold_in", False):
        able = [name for name, cls in MODELS.items() if getattr(cls, "supports_fold_in", False)]
        raise ValueError(
            f"model {model_class.name!r} ({where}) cannot score a user it was not trained on, which "
            f"evaluation.protocol {protocol!r} needs; models that fold in new users: {', '.join(able)}"
        )
