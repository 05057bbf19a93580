"""Custom Kedro datasets of the project."""

from debias_pipeline.datasets.raw_ratings import DATASETS, RawRatings, RawRatingsDataset

__all__ = ["DATASETS", "RawRatings", "RawRatingsDataset"]
