"""The project's config loader: Kedro's OmegaConfigLoader plus per-dataset defaults.

``conf/base/parameters_datasets.yml`` holds ``dataset_defaults``: for each dataset, the
parameter blocks (dotted names such as ``lightgcn.model``) whose values differ on that
dataset from the blocks' own, e.g. BPR and the LightGCN papers' settings on LastFM and
Gowalla. They are merged over the parameters of the run's dataset, and the run's
``--params`` are merged over them again, so that precedence is: a block's own values <
the dataset's defaults < the command line.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kedro.config import OmegaConfigLoader

DEFAULTS_KEY = "dataset_defaults"


def _merge(target: dict[str, Any], overlay: Mapping[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    *parents, leaf = dotted.split(".")
    tree: dict[str, Any] = {leaf: value}
    for part in reversed(parents):
        tree = {part: tree}
    return tree


def apply_dataset_defaults(parameters: dict[str, Any], runtime_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``parameters`` with the run's dataset's defaults merged in, the runtime
    parameters kept on top (a new dict; ``parameters`` is left alone).

    Raises:
        ValueError: When a default names a block the parameters do not have.
    """
    defaults = (parameters.get(DEFAULTS_KEY) or {}).get(parameters.get("dataset"))
    if not defaults:
        return parameters
    merged = copy.deepcopy(parameters)
    for dotted, block in defaults.items():
        head = dotted.split(".")[0]
        if head not in merged:
            raise ValueError(
                f"parameter '{DEFAULTS_KEY}.{parameters['dataset']}.{dotted}' names no parameter block"
            )
        _merge(merged, _nested(dotted, block))
    _merge(merged, runtime_params or {})
    return merged


class DatasetDefaultsConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose ``parameters`` carry the run's dataset's defaults."""

    def __getitem__(self, key: str) -> dict[str, Any]:
        config = super().__getitem__(key)
        if key == "parameters":
            # Top-level keys starting with "_" are YAML anchors' holders, as in the catalog.
            config = {name: value for name, value in config.items() if not name.startswith("_")}
            return apply_dataset_defaults(config, self.runtime_params)
        return config
