"""RawDataset, the catalog's ``raw_data``: the registry's parser for the ``dataset``
parameter under ``root/<dataset>/`` (the parsers themselves: test_loaders.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DatasetError

from debias_pipeline.data.loaders.parsing import REQUIRED_FILES, RawData, RawDataError
from debias_pipeline.data.registry import DATASETS, dataset_spec
from debias_pipeline.datasets.raw import RawDataset

YAHOO_TRAIN = "1\t2\t5\n3\t1\t4\n2\t10\t1\n"
YAHOO_TEST = "1\t1\t3\n2\t2\t2\n"


def _yahoo(root: Path) -> dict[str, Path]:
    folder = root / "yahoo_r3"
    folder.mkdir(parents=True)
    train, test = (folder / name for name in REQUIRED_FILES["yahoo_r3"])
    train.write_text(YAHOO_TRAIN)
    test.write_text(YAHOO_TEST)
    return {"biased": train, "unbiased": test}


def test_the_registry_names_every_dataset_and_its_files() -> None:
    assert list(DATASETS) == [
        "synthetic", "coat", "yahoo_r3", "gowalla", "lastfm", "movielens_100k", "movielens_1m", "anime", "custom"
    ]  # fmt: skip
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert spec.files == REQUIRED_FILES.get(name, ())
    assert dataset_spec("coat").files == ("train.ascii", "test.ascii")
    assert dataset_spec("coat").parts == "biased_unbiased" and dataset_spec("coat").default_protocol == "thesis"


@pytest.mark.parametrize("name", ["movielens", None, 3])
def test_dataset_spec_unknown_name_lists_the_valid_ones(name: object) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset .*\(parameter 'dataset'\); valid datasets: synthetic, coat, yahoo_r3"):
        dataset_spec(name)


def test_unknown_dataset_names_the_valid_ones() -> None:
    with pytest.raises(DatasetError, match=r"'movielens'.*valid datasets: synthetic, coat, yahoo_r3"):
        RawDataset("movielens", root="unused")


def test_loads_through_the_registry_parser(tmp_path: Path) -> None:
    paths = _yahoo(tmp_path)
    dataset = RawDataset("yahoo_r3", root=str(tmp_path))
    assert dataset.exists()
    raw = dataset.load()
    assert isinstance(raw, RawData)
    assert raw.name == "yahoo_r3"
    assert raw.shape is None
    assert raw.files == {"biased": str(paths["biased"]), "unbiased": str(paths["unbiased"])}
    table = raw.interactions
    assert list(table.columns) == ["user", "item", "rating", "timestamp", "part", "line"]
    # ids stay as the file writes them (1-indexed); line = 1-based line number
    assert table["user"].tolist() == [1, 3, 2, 1, 2]
    assert table["item"].tolist() == [2, 1, 10, 1, 2]
    assert table["rating"].tolist() == [5.0, 4.0, 1.0, 3.0, 2.0]
    assert table["part"].tolist() == ["biased"] * 3 + ["unbiased"] * 2
    assert table["line"].tolist() == [1, 2, 3, 1, 2]


@pytest.mark.parametrize("missing", ["biased", "unbiased"])
def test_missing_file_names_it(tmp_path: Path, missing: str) -> None:
    paths = _yahoo(tmp_path)
    paths[missing].unlink()
    dataset = RawDataset("yahoo_r3", root=str(tmp_path))
    assert not dataset.exists()
    # Kedro wraps the parser's RawDataError into a DatasetError; the message is kept.
    with pytest.raises(DatasetError, match=f"missing for dataset 'yahoo_r3'.*{paths[missing]}"):
        dataset.load()


def test_missing_directory_names_both_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        RawDataset("coat", root=str(tmp_path)).load()
    assert isinstance(error.value.__cause__, RawDataError)
    assert str(tmp_path / "coat" / "train.ascii") in str(error.value)
    assert str(tmp_path / "coat" / "test.ascii") in str(error.value)


def test_synthetic_needs_no_files(tmp_path: Path) -> None:
    dataset = RawDataset("synthetic", root=str(tmp_path / "nowhere"))
    assert dataset.exists()
    raw = dataset.load()
    assert raw.name == "synthetic" and raw.files == {}
    assert raw.interactions.empty
    assert list(raw.interactions.columns) == ["user", "item", "rating", "timestamp", "part", "line"]
    assert raw.items is raw.users is raw.social is raw.shape is None


def test_custom_reads_its_parameters(tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "clicks.csv").write_text("who,what\nann,a1\nbob,b2\n")
    options = {"interactions": "clicks.csv", "columns": {"user": "who", "item": "what"}}
    raw = RawDataset("custom", root=str(tmp_path), custom=options).load()
    assert raw.name == "custom"
    assert raw.interactions["user"].tolist() == ["ann", "bob"]
    assert raw.interactions["item"].tolist() == ["a1", "b2"]
    assert raw.interactions["part"].tolist() == ["all", "all"]


def test_custom_options_are_ignored_for_the_fixed_formats(tmp_path: Path) -> None:
    _yahoo(tmp_path)
    raw = RawDataset("yahoo_r3", root=str(tmp_path), custom={"interactions": "nowhere.csv"}).load()
    assert len(raw.interactions) == 5


def test_save_is_refused(tmp_path: Path) -> None:
    dataset = RawDataset("coat", root=str(tmp_path))
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(RawData(name="coat", interactions=pd.DataFrame(), files={}))
    with pytest.raises(DatasetError):  # Kedro itself refuses to save None
        dataset.save(None)
    assert not (tmp_path / "coat").exists()


def test_describe_names_dataset_and_root(tmp_path: Path) -> None:
    text = str(RawDataset("yahoo_r3", root=str(tmp_path)))
    assert "yahoo_r3" in text and str(tmp_path) in text


def test_a_file_over_max_file_mb_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _yahoo(tmp_path)  # train: 19 bytes, test: 12 bytes
    monkeypatch.setattr("debias_pipeline.datasets.raw.LOADERS", {})  # nothing may be parsed
    with pytest.raises(DatasetError, match=r"ydata-ymusic-rating-study-v1_0-train.txt: 0.0 MB \(19 bytes\) is over the "
                       r"limit of 1.5e-05 MB \(raw_data's max_file_mb\).*--params=raw_data.max_file_mb=") as error:
        RawDataset("yahoo_r3", root=str(tmp_path), max_file_mb=15e-6).load()
    assert isinstance(error.value.__cause__, RawDataError)
    assert str(paths["biased"]) in str(error.value)


def test_files_within_max_file_mb_load(tmp_path: Path) -> None:
    _yahoo(tmp_path)
    assert len(RawDataset("yahoo_r3", root=str(tmp_path), max_file_mb=19e-6).load().interactions) == 5
    assert len(RawDataset("yahoo_r3", root=str(tmp_path), max_file_mb=None).load().interactions) == 5


def test_max_file_mb_checks_the_custom_files_too(tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "clicks.csv").write_text("user,item\n1,2\n")
    (folder / "items.csv").write_text("item,title\n" + "2,a long title\n" * 10)
    options = {"interactions": "clicks.csv", "items": "items.csv"}
    with pytest.raises(DatasetError, match=r"items.csv: .* over the limit of 0.0001 MB"):
        RawDataset("custom", root=str(tmp_path), custom=options, max_file_mb=100e-6).load()
    # A missing file is left to the parser, which names every missing file.
    with pytest.raises(DatasetError, match=r"missing for dataset 'custom'.*users.csv"):
        RawDataset("custom", root=str(tmp_path), custom={**options, "users": "users.csv"}, max_file_mb=1).load()


@pytest.mark.parametrize("limit", [0, -1, "10", True])
def test_max_file_mb_must_be_a_positive_number(tmp_path: Path, limit: object) -> None:
    with pytest.raises(DatasetError, match="max_file_mb must be a positive number of MB or null"):
        RawDataset("coat", root=str(tmp_path), max_file_mb=limit)  # type: ignore[arg-type]
