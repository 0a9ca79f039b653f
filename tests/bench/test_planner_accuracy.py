"""bench/planner_accuracy.py: the planner's memory against what 2 CPU ranks hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import planner_accuracy, workspace

pytestmark = [pytest.mark.slow]


@pytest.mark.distributed
def test_planner_accuracy_compares_states_and_measures_rss(tiny_workspace: workspace.Workspace,
                                                          tmp_path: Path) -> None:
    """The model states the planner predicts are what the ranks hold, item by item (the bench's
    goal: within 5 %). The RSS growth is measured and set against the plan, but not held to
    it here: on a 1-layer, 32-wide model the process's own growth dwarfs the model; the
    totals' accuracy is read on the 20M and 50M models (docs/benchmarks.md)."""
    settings = planner_accuracy.Settings(configs=("llama-tiny",), strategies=("ddp",),
                                         lora_strategies=("ddp",), qlora_strategies=("ddp",),
                                         seq_len=32, steps=2)
    rows = planner_accuracy.measure(tiny_workspace.tokenizer, tmp_path, settings,
                                    log=lambda _: None)
    row, lora, qlora = rows
    # tuning lora: the frozen base's weights, the adapters' gradients and Adam states only
    assert (row["tuning"], lora["tuning"], qlora["tuning"]) == ("full", "lora", "qlora")
    for adapted in (lora, qlora):
        for item, predicted in adapted["predicted_states"].items():
            assert adapted["measured_states"][item] == pytest.approx(predicted, rel=0.05), item
    assert lora["measured_states"]["gradients"] < lora["measured_states"]["weights"] / 4
    # qlora: the same adapters on a base whose linear layers are 4-bit; TRL casts the
    # adapters of a quantized model to bf16, so their gradients take half the bytes
    assert 2 * qlora["measured_states"]["gradients"] == lora["measured_states"]["gradients"]
    assert qlora["measured_states"]["weights"] < lora["measured_states"]["weights"]
    assert row["strategy"] == "ddp" and row["wrapper"] == "DistributedDataParallel"
    assert set(row["measured_states"]) == set(row["predicted_states"]) == {
        "weights", "gradients", "optimizer"}
    for item, predicted in row["predicted_states"].items():
        assert row["measured_states"][item] == pytest.approx(predicted, rel=0.05), item
    assert abs(row["state_error"]) < 0.05
    # finetune_trainer keeps DDP's gradients as views into its all-reduce buckets: one
    # gradient-sized copy per rank, not a bucket copy besides .grad
    assert "DDP all-reduce buckets" not in row["detail"]
    assert row["measured_states"]["gradients"] == row["measured_states"]["weights"]
    assert row["peak_rss"] > row["baseline_rss"] and row["predicted_growth"] > 0
    assert row["growth_error"] == pytest.approx(
        row["measured_growth"] / row["predicted_growth"] - 1)
