"""One place per default: the config classes hold the defaults, the yml blocks only what
differs (each with its reason), and docs/parameters.md is generated from both."""

from __future__ import annotations

import sys
from pathlib import Path

from debias_pipeline.models.dual import DualConfig
from tests.conftest import REPO

sys.path.insert(0, str(REPO))

from scripts import parameters_doc


def _named(keys: list[parameters_doc.YamlKey]) -> list[str]:
    return [f"{key.block}.{key.key}" for key in keys]


def test_the_walk_tells_repeated_overridden_and_unknown_keys_apart() -> None:
    values = {"lr": 0.04, "weight_decay": 1e-5, "exposure": {"embedding_dim": 200, "prior": "popularity"}, "nope": 1}
    keys = {key.key: key for key in parameters_doc.yaml_keys("dual.model", DualConfig, values)}
    assert sorted(keys) == ["exposure.embedding_dim", "exposure.prior", "lr", "nope", "weight_decay"]
    assert [name for name, key in keys.items() if key.repeats_default] == ["lr", "exposure.embedding_dim"]
    assert (keys["weight_decay"].default, keys["exposure.prior"].default) == (1e-6, "none")
    assert keys["nope"].field is None and not keys["nope"].repeats_default
    # A YAML list and the class's tuple are the same value.
    tuples = parameters_doc.yaml_keys("b", parameters_doc.model_config({"name": "gat"}), {"fanouts": [10, 5]})
    assert [key.repeats_default for key in tuples] == [True]


def test_no_yml_key_repeats_its_class_default() -> None:
    """A value equal to the class default is a second source of truth: delete it from the yml."""
    keys = parameters_doc.every_yaml_key(parameters_doc.load_parameters())
    assert len(keys) > 0
    assert _named([key for key in keys if key.repeats_default]) == []


def test_every_yml_key_names_a_field_of_its_class() -> None:
    """Blocks, model blocks (those of study_hypotheses.models too) and every dataset's defaults."""
    parameters = parameters_doc.load_parameters()
    keys = parameters_doc.every_yaml_key(parameters) + parameters_doc.dataset_default_keys(parameters)
    assert _named([key for key in keys if key.field is None]) == []


def test_each_value_a_model_block_keeps_says_why() -> None:
    """A comment on the key's line or just above it (or above the nested block it sits in)."""
    parameters = parameters_doc.load_parameters()
    files = parameters_doc.block_files()
    blocks = parameters_doc.model_blocks(parameters)
    unexplained = []
    for key in parameters_doc.every_yaml_key(parameters):
        if key.block not in blocks:
            continue
        lines = parameters_doc.key_lines(parameters_doc.CONF / files[key.block.split(".")[0]])
        parts = key.key.split(".")
        enclosing = [f"{key.block}.{'.'.join(parts[:n])}" for n in range(len(parts), 0, -1)]
        if not any(lines[dotted].explained for dotted in enclosing):
            unexplained.append(f"{key.block}.{key.key}")
    assert unexplained == []


def test_a_key_is_explained_by_a_comment_on_its_line_or_above(tmp_path: Path) -> None:
    path = tmp_path / "parameters_x.yml"
    path.write_text("x:\n  model:\n    name: mf\n    lr: 0.1   # why\n    # why\n    epochs: 3\n    patience: 4\n")
    lines = parameters_doc.key_lines(path)
    assert [lines[f"x.model.{name}"].explained for name in ("lr", "epochs", "patience")] == [True, True, False]
    assert lines["x.model.patience"].number == 7


def test_every_parameter_has_a_description() -> None:
    assert parameters_doc.undocumented() == []


def test_the_parameters_page_is_current() -> None:
    """docs/parameters.md is what scripts/parameters_doc.py writes now (`make parameters-doc`)."""
    page = parameters_doc.render()
    assert page.startswith(parameters_doc.HEADER + "\n")
    assert parameters_doc.PAGE.read_text() == page
