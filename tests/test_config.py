"""build_config and Params (typed frozen parameter blocks, Pydantic) and resolve_device."""

from __future__ import annotations

from typing import Literal

import pydantic
import pytest
import torch

from debias_pipeline.config.params import Params, build_config, require
from debias_pipeline.training.device import resolve_device


class Tower(Params):
    embedding_dim: int
    lr: float = 0.01
    kind: Literal["mf", "lightgcn"] = "mf"

    def check(self) -> None:
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")


class Model(Params):
    preference: Tower
    exposure: Tower


class Experiment(Params):
    name: str
    model: Model
    early_stop: bool = True
    layers: tuple[int, ...] = (2,)
    patience: int | None = None


def _params(**overrides):
    params = {
        "name": "dual",
        "model": {"preference": {"embedding_dim": 8, "lr": 0.04, "kind": "lightgcn"}, "exposure": {"embedding_dim": 4}},
    }
    params.update(overrides)
    return params


def test_builds_nested_frozen_dataclasses():
    config = build_config(Experiment, _params(layers=[2, 3], patience=5), "dual")
    assert config == Experiment(
        name="dual",
        model=Model(
            preference=Tower(embedding_dim=8, lr=0.04, kind="lightgcn"), exposure=Tower(embedding_dim=4, lr=0.01, kind="mf")
        ),
        early_stop=True,
        layers=(2, 3),
        patience=5,
    )
    assert isinstance(config.model.exposure, Tower)
    assert isinstance(config.layers, tuple)  # a YAML list becomes a tuple
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.name = "other"  # type: ignore[misc]


def test_defaults_fill_missing_optional_keys():
    config = build_config(Tower, {"embedding_dim": 3}, "tower")
    assert config == Tower(embedding_dim=3, lr=0.01, kind="mf")


def test_none_params_means_all_defaults():
    class AllDefaults(Params):
        threshold: int = 4

    assert build_config(AllDefaults, None, "binarization") == AllDefaults(threshold=4)


def test_int_is_accepted_for_float_and_converted():
    config = build_config(Tower, {"embedding_dim": 3, "lr": 1}, "tower")
    assert config.lr == 1.0 and type(config.lr) is float


def test_optional_accepts_none_and_checks_the_type():
    assert build_config(Experiment, _params(patience=None), "dual").patience is None
    with pytest.raises(ValueError, match=r"parameter 'dual\.patience' must be an integer"):
        build_config(Experiment, _params(patience="5"), "dual")


def test_unknown_key_names_dotted_parameter_and_valid_keys():
    params = _params()
    params["model"]["exposure"]["embeding_dim"] = 4  # typo
    with pytest.raises(ValueError, match=r"dual\.model\.exposure\.embeding_dim.*valid keys: embedding_dim, kind, lr"):
        build_config(Experiment, params, "dual")


def test_unknown_top_level_key():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) dual\.epochs"):
        build_config(Experiment, _params(epochs=3), "dual")


def test_missing_key_names_dotted_parameter():
    params = _params()
    del params["model"]["preference"]["embedding_dim"]
    with pytest.raises(ValueError, match=r"missing parameter 'dual\.model\.preference\.embedding_dim'"):
        build_config(Experiment, params, "dual")


def test_missing_nested_block_names_it():
    params = _params()
    del params["model"]["exposure"]
    with pytest.raises(ValueError, match=r"missing parameter 'dual\.model\.exposure'"):
        build_config(Experiment, params, "dual")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("model", "exposure", "embedding_dim"), "4", r"'dual\.model\.exposure\.embedding_dim' must be an integer"),
        (("model", "exposure", "embedding_dim"), 4.0, r"'dual\.model\.exposure\.embedding_dim' must be an integer"),
        (("model", "exposure", "embedding_dim"), True, r"'dual\.model\.exposure\.embedding_dim' must be an integer"),
        (("model", "preference", "lr"), "0.04", r"'dual\.model\.preference\.lr' must be a number"),
        (("model", "preference", "lr"), False, r"'dual\.model\.preference\.lr' must be a number"),
        (("model", "preference", "kind"), "ngcf", r"'dual\.model\.preference\.kind' must be one of \['mf', 'lightgcn'\]"),
        (("early_stop",), "yes", r"'dual\.early_stop' must be true or false"),
        (("early_stop",), 1, r"'dual\.early_stop' must be true or false"),
        (("name",), 3, r"'dual\.name' must be a string"),
        (("layers",), 2, r"'dual\.layers' must be a list"),
        (("layers",), [2, "3"], r"'dual\.layers\[1\]' must be an integer"),
        (("model",), [1, 2], r"'dual\.model' must be a mapping"),
    ],
)
def test_wrong_type_names_dotted_parameter(path, value, message):
    params = _params()
    block = params
    for key in path[:-1]:
        block = block[key]
    block[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        build_config(Experiment, params, "dual")


def test_top_level_non_mapping_names_block():
    with pytest.raises(ValueError, match=r"parameter 'dual' must be a mapping"):
        build_config(Experiment, ["name"], "dual")


def test_range_check_error_names_the_block():
    params = _params()
    params["model"]["exposure"]["embedding_dim"] = 0
    with pytest.raises(ValueError, match=r"dual\.model\.exposure.*embedding_dim must be >= 1, got 0"):
        build_config(Experiment, params, "dual")


def test_range_check_error_names_the_dotted_parameter():
    # A check() range error names the full parameter,
    # 'dual.model.exposure.embedding_dim', not just its block.
    params = _params()
    params["model"]["exposure"]["embedding_dim"] = 0
    with pytest.raises(ValueError, match=r"dual\.model\.exposure\.embedding_dim"):
        build_config(Experiment, params, "dual")


def test_require():
    require(True, "never raised")
    with pytest.raises(ValueError, match="^exact message$"):
        require(False, "exact message")


# ---------------------------------------------------------------------------- device


def test_resolve_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_resolve_auto_without_cuda_is_cpu():
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resolve_auto_with_cuda_is_cuda():
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda") == torch.device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_resolve_cuda_without_cuda_raises(name):
    with pytest.raises(ValueError, match=rf"'{name}'.*CUDA is not available"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "CPU", "", "gpu"])
def test_resolve_unknown_name_lists_valid_ones(name):
    with pytest.raises(ValueError, match=r"parameter 'device' must be one of \('auto', 'cpu', 'cuda'\)"):
        resolve_device(name)


@pytest.mark.parametrize("name", [None, 0, torch.device("cpu")])
def test_resolve_non_string_raises(name):
    with pytest.raises(ValueError, match="parameter 'device'"):
        resolve_device(name)  # type: ignore[arg-type]
