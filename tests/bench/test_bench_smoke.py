"""Each bench section's core on the tiniest inputs, so the bench cannot rot unnoticed.

Structure only: which keys and runs come back, that the report renders them. Never timings:
speed is read from docs/benchmarks.md, not asserted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's `bench`

from bench import (
    operator_scale,
    planner_accuracy,
    profiling,
    report,
    throughput,
    workspace,
)

TINY = {**workspace.MODEL_20M, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> workspace.Workspace:
    return workspace.prepare(tmp_path_factory.mktemp("ws"), model_config=TINY, conversations=40)


def test_workspace_holds_what_both_recipes_load(tiny_workspace: workspace.Workspace) -> None:
    assert (tiny_workspace.model / "config.json").is_file()
    assert (tiny_workspace.tokenizer / "tokenizer.json").is_file()
    assert len(tiny_workspace.data.read_text().splitlines()) == 40
    assert tiny_workspace.parameters > 0 and tiny_workspace.real_tokens_per_row > 0


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


def test_profile_summary_splits_phases_and_kinds() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    a = torch.randn(64, 64, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        (a @ a).relu().sum().backward()
    summary = profiling.summarize(prof.events(), wall_seconds=1.0, steps=1)
    assert {"steps", "wall_seconds", "phases", "kinds", "top_ops"} <= set(summary)
    assert "GEMM (mm, addmm, bmm)" in summary["kinds"]
    assert "outside torch ops (Python, data, loop)" in summary["phases"]


def test_training_thread_is_the_one_with_the_phases_not_the_busiest() -> None:
    def event(name: str, thread: int, micros: float) -> SimpleNamespace:
        return SimpleNamespace(name=name, thread=thread, cpu_parent=None, cpu_time_total=micros)

    gloo, trainer = 7, 1
    events = [event("gloo:all_reduce", gloo, 9e6),
              event("DistributedDataParallel.forward", trainer, 2e6),
              event("autograd::engine::evaluate_function: MmBackward0", trainer, 3e6)]
    assert profiling.training_thread(events) == trainer
    # no known range at all: the busiest thread
    assert profiling.training_thread([event("aten::mm", 3, 1.0), event("aten::add", 4, 2.0)]) == 4


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


def test_operator_scale_counts_children_and_requests(tmp_path: Path) -> None:
    result = operator_scale.measure_one(2, tmp_path, timeout=60)
    assert result.completed == 2 and not result.timed_out
    assert result.requests_per_job["create jobs"] == 1
    assert result.requests_per_job["patch finetunejobs/status"] >= 1
    assert result.peak_rss > 0 and result.writes_per_job >= 4


def test_report_renders_every_section(tmp_path: Path) -> None:
    results = {"machine": {"date": "today", "cpu": "cpu", "cores": 2, "versions": {}},
               "throughput": None, "planner": None, "operator": None}
    text = report.render(results, command="python -m bench")
    for heading in ("## Machine", "## How to reproduce", "## 1.", "## 2.", "## 3."):
        assert heading in text
    json.dumps(results)
