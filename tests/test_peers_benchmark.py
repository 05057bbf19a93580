"""The peer benchmark's harness: every contender runs, the table's ratios are the medians'."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import peers  # noqa: E402


def test_contest_rotates_the_order_and_the_table_divides_medians_by_the_projects() -> None:
    calls: list[str] = []

    class Memory:
        def start(self) -> None:
            pass

        def stop(self) -> int:
            return 2_000_000

    ours = peers.Contender("ours", lambda: calls.append("ours"))
    theirs = peers.Contender("theirs", lambda: calls.append("theirs"), scale=2.0, extra_s=1.0, note="does more")
    peers.contest([ours, theirs], repeats=3, memory=Memory())
    assert calls == ["ours", "theirs", "ours", "theirs", "theirs", "ours", "ours", "theirs"]
    ours.seconds, theirs.seconds = [1.0, 3.0, 2.0], [2.0, 4.0, 9.0]  # medians 2 and 4
    assert ours.median_s == 2.0 and theirs.median_s == 4.0 * 2.0 + 1.0
    table = peers.format_tables([("work", [ours, theirs])], [("work", [ours, theirs])]).splitlines()
    assert table[2] == "| work | ours | 2.000 | 1.00x | 2 | 2.000 | 1.00x | 1.00x |"
    assert table[3] == "|  | theirs (does more) | 9.000 | 4.50x | 2 | 9.000 | 4.50x | 1.00x |"


@pytest.mark.slow
def test_every_installed_contender_runs_on_a_small_graph(capsys) -> None:
    assert peers.main(["--graph", "small", "--quick"]) == 0
    out = capsys.readouterr().out
    for name in (
        "project lightgcn", "official LightGCN code's path", "PyG LightGCN (default edge-index propagation)",
        "PyG LightGCN (given the normalized CSR adjacency)", "project MF-BPR (adam)", "project MF-BPR (sparse_adam)",
        "project MF-BPR (sgd)", "project MF (solver: implicit_bpr, 1 thread)",
        "implicit 0.7 BPR", "project wmf (solver: exact, float64)", "implicit 0.7 ALS (cg, float32)",
        "project full_ranking_metrics", "chunked torch.topk", "implicit recommend",
    ):
        assert f"| {name}" in out, name
    first_rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("|  | ")][1:]
    assert len(first_rows) == 4  # each work's first row, the ratios' base, is the project's
    assert all(line.split(" | ")[1].startswith("project ") for line in first_rows), first_rows
