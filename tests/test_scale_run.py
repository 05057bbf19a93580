"""The scale benchmark runs from a fresh checkout: at a tiny size, end to end."""

from __future__ import annotations

import shutil

import pytest

from benchmarks.scale_run import main


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("/usr/bin/time") is None, reason="the benchmark times the run with /usr/bin/time -v")
def test_the_scale_run_runs_at_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--users", "60", "--items", "80", "--interactions", "1500", "--test-items", "5", "--epochs", "1"])
    out = capsys.readouterr().out
    assert code == 0, out[-6000:]
    assert "graph: 60 users x 80 items x 1,500 interactions" in out
    assert "1 epochs" in out and '"test_ndcg_at_20"' in out


def test_the_epoch_scaling_runs_at_tiny_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--epoch-scaling", "--sizes", "0.002", "0.004", "--exact-batches", "1", "--modes", "exact", "stale"])
    out = capsys.readouterr().out
    assert code == 0
    assert "2,000" in out and "4,000" in out
    assert "exact: epoch time ∝ n^" in out and "stale: epoch time ∝ n^" in out
