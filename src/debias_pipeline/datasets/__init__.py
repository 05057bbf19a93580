"""Raw datasets: the registry of datasets, the parsers of their formats and the Kedro
dataset that reads them."""

from debias_pipeline.datasets.loaders import RawData, RawDataError
from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.datasets.registry import DATASETS, DatasetSpec, dataset_spec

__all__ = ["DATASETS", "DatasetSpec", "RawData", "RawDataError", "RawDataset", "dataset_spec"]
