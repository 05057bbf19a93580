"""Recommenders: one file per model, the shared interface in ``base`` and the registry."""

from debias_pipeline.models.base import Recommender, TrainData, ValidationSet, Validator
from debias_pipeline.models.registry import MODELS, ModelBlock, build_model, model_block, model_class

__all__ = [
    "MODELS",
    "ModelBlock",
    "Recommender",
    "TrainData",
    "ValidationSet",
    "Validator",
    "build_model",
    "model_block",
    "model_class",
]
