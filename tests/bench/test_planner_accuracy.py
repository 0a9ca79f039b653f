"""bench/planner_accuracy.py: the planner's memory against what 2 CPU ranks hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import planner_accuracy, workspace

pytestmark = [pytest.mark.slow]


@pytest.mark.distributed
def test_planner_accuracy_compares_states_and_rss(tiny_workspace: workspace.Workspace,
                                                  tmp_path: Path) -> None:
    settings = planner_accuracy.Settings(configs=("llama-tiny",), strategies=("ddp",),
                                         seq_len=32, steps=2)
    rows = planner_accuracy.measure(tiny_workspace.tokenizer, tmp_path, settings,
                                    log=lambda _: None)
    (row,) = rows
    assert row["strategy"] == "ddp" and row["wrapper"] == "DistributedDataParallel"
    assert set(row["measured_states"]) == {"weights", "gradients", "optimizer"}
    assert row["measured_state_total"] > 0 and row["peak_rss"] > row["baseline_rss"]
    # finetune_trainer keeps DDP's gradients as views into its all-reduce buckets: one
    # gradient-sized copy per rank, not a bucket copy besides .grad
    assert "DDP all-reduce buckets" not in row["detail"]
    assert row["measured_states"]["gradients"] == row["measured_states"]["weights"]
