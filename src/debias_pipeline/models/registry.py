"""The explicit model registry: name -> class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from debias_pipeline.config import build_config
from debias_pipeline.models.base import Recommender
from debias_pipeline.models.dual import DualModel
from debias_pipeline.models.expomf import ExpoMF
from debias_pipeline.models.lightgcn import LightGCN
from debias_pipeline.models.mf import MF
from debias_pipeline.models.ngcf import NGCF
from debias_pipeline.models.recrec import ReCRec
from debias_pipeline.models.relmf import RelMF
from debias_pipeline.models.wmf import WMF

MODELS: dict[str, type[Recommender]] = {
    "mf": MF,
    "lightgcn": LightGCN,
    "dual": DualModel,
    "ngcf": NGCF,
    "wmf": WMF,
    "expomf": ExpoMF,
    "relmf": RelMF,
    "recrec": ReCRec,
}


def model_class(name: str) -> type[Recommender]:
    """The class registered under ``name``.

    Raises:
        ValueError: For an unknown name, listing the valid ones.
    """
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}") from None


def build_model(params: Mapping[str, Any], where: str, *, seed: int, device: torch.device) -> Recommender:
    """Build an unfitted model from its parameter block.

    Args:
        params: The block, e.g. ``{"name": "mf", "embedding_dim": 200, ...}``.
        where: The block's dotted name in the parameters, for error messages.
        seed: Seed of the model's initialization.
        device: Device it trains on.
    """
    if not isinstance(params, Mapping) or "name" not in params:
        raise ValueError(f"parameter '{where}.name' is missing; valid models: {', '.join(sorted(MODELS))}")
    cls = model_class(params["name"])
    config = build_config(cls.Config, {k: v for k, v in params.items() if k != "name"}, where)
    return cls(config, seed=seed, device=device)
