"""bench/throughput.py: recipe A (plain TRL) and recipe B (finetune_trainer) on the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import throughput, workspace

pytestmark = [pytest.mark.slow]


@pytest.mark.distributed
def test_throughput_runs_both_recipes(tiny_workspace: workspace.Workspace,
                                      tmp_path: Path) -> None:
    settings = throughput.Settings(steps=3, global_batch=4, micro_batch_a=2, runs=1)
    result = throughput.measure(tiny_workspace, tmp_path, settings, gemm_peak_flops=1e10,
                                log=lambda _: None)
    assert [r.recipe for r in result.runs] == ["A", "B"]
    for run in result.runs:
        assert run.steady_tokens > 0 and len(run.losses) == 3
    # Same rows, same order, same initial weights: the recipes see the same tokens.
    assert result.runs[0].steady_tokens == result.runs[1].steady_tokens
    summary = result.summary()
    assert {"ratio_median", "ratio_min", "ratio_max", "loss_difference",
            "b_peak_fraction"} <= set(summary)
    assert result.plan["strategy"] == "ddp" and result.plan["worldSize"] == 2
