"""The ratings' MLflow dataset input: above the threshold a sampled digest and schema
that read only the sample, which still tell shapes and schemas apart; at or below it,
MLflow's own digest; through the hook, the whole table's row count in the profile."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.data.digest_utils import compute_pandas_digest

from debias_pipeline.framework import dataset_digest
from debias_pipeline.framework.dataset_digest import SAMPLE_ROWS, strided_positions, table_dataset
from debias_pipeline.framework.mlflow_hooks import MlflowRunLabelHook


def _ratings(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "user": rng.integers(0, 500, rows),
            "item": pd.array([f"i{k}" for k in rng.integers(0, 300, rows)], dtype="string[pyarrow]"),
            "rating": rng.integers(1, 6, rows).astype(np.float64),
            "timestamp": np.arange(rows, dtype=np.float64),
            "source": "all",
        }
    )


def test_strided_positions_span_the_table() -> None:
    assert strided_positions(5, 3).tolist() == [0, 2, 4]
    assert strided_positions(3, 10).tolist() == [0, 1, 2]
    positions = strided_positions(1_000_001)
    assert positions.size == SAMPLE_ROWS and positions[0] == 0 and positions[-1] == 1_000_000


def test_above_the_threshold_only_the_sample_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _ratings(50_000)
    hashed, inferred = [], []
    hash_rows, infer = pd.util.hash_pandas_object, dataset_digest._infer_schema
    monkeypatch.setattr(
        pd.util, "hash_pandas_object", lambda rows, **kw: hashed.append(len(rows)) or hash_rows(rows, **kw)
    )
    monkeypatch.setattr(dataset_digest, "_infer_schema", lambda rows: inferred.append(len(rows)) or infer(rows))
    monkeypatch.setattr(
        "mlflow.data.pandas_dataset.compute_pandas_digest", lambda _: pytest.fail("MLflow's full digest")
    )
    logged = table_dataset(frame, "data/01_raw/x", "x", full_digest_rows=20_000)
    assert logged.profile == {"num_rows": 50_000, "num_elements": 250_000}
    assert [column.name for column in logged.schema.inputs] == list(frame.columns)
    assert hashed == [SAMPLE_ROWS] and inferred == [SAMPLE_ROWS]


def test_the_sampled_digest_follows_shape_schema_and_sampled_rows() -> None:
    frame = _ratings(30_000)
    digest = table_dataset(frame, "x", "x", full_digest_rows=20_000).digest
    assert len(digest) == 8 and digest == table_dataset(frame.copy(), "x", "x", full_digest_rows=20_000).digest
    changed = {
        "a row fewer": frame.iloc[:-1],
        "a column fewer": frame.drop(columns="timestamp"),
        "a column renamed": frame.rename(columns={"rating": "score"}),
        "a dtype changed": frame.astype({"rating": np.float32}),
        "a sampled row changed": frame.assign(rating=frame["rating"].where(frame.index != 0, 9.0)),
    }
    for change, other in changed.items():
        assert table_dataset(other, "x", "x", full_digest_rows=20_000).digest != digest, change


def test_at_or_below_the_threshold_mlflow_digest_is_kept() -> None:
    frame = _ratings(2_000)
    logged = table_dataset(frame, "x", "x", full_digest_rows=2_000)
    assert type(logged).__name__ == "PandasDataset"
    assert logged.digest == compute_pandas_digest(frame)
    assert logged.profile == {"num_rows": 2_000, "num_elements": 10_000}


def test_the_hook_logs_the_sampled_input(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    frame = _ratings(30_000).assign(line=np.arange(30_000))
    hook = MlflowRunLabelHook(full_digest_rows=20_000)

    class Node:
        name = "ingest_ratings"

    with mlflow.start_run() as run:
        hook.after_node_run(Node(), {"params:dataset": "lastfm"}, {"ratings": frame})
    (dataset_input,) = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    expected = dataset_digest.sampled_digest(frame.drop(columns="line"), strided_positions(30_000))
    assert dataset_input.dataset.name == "lastfm" and dataset_input.dataset.digest == expected
    assert '"num_rows": 30000' in dataset_input.dataset.profile
    assert "lastfm" in dataset_input.dataset.source
