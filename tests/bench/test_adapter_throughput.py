"""bench/adapter_throughput.py: recipe B with tuning full, lora and qlora on the same rows."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from bench import adapter_throughput, report, throughput, workspace

pytestmark = [pytest.mark.slow]


@pytest.mark.distributed
def test_adapter_throughput_runs_every_tuning_on_the_same_tokens(
        tiny_workspace: workspace.Workspace, tmp_path: Path) -> None:
    settings = throughput.Settings(steps=3, global_batch=4, runs=1)
    result = adapter_throughput.measure(tiny_workspace, tmp_path, settings, log=lambda _: None)
    assert list(result.runs) == ["full", "lora", "qlora"]
    runs = [r for tuning_runs in result.runs.values() for r in tuning_runs]
    for run in runs:
        assert run.steady_tokens > 0 and len(run.losses) == 3
    # Same rows in the same order: each tuning counts the same real tokens.
    assert len({run.steady_tokens for run in runs}) == 1
    summary = result.summary()
    assert summary["full"]["vs_full"] == 1.0
    assert set(summary["qlora"]) == {"tokens_per_second", "vs_full", "final_loss"}
    assert {plan["strategy"] for plan in result.plans.values()} == {"ddp"}
    # what `python -m bench --sections adapters` saves, the report renders: one row a run
    text = report.render({"adapters": {"result": asdict(result), "summary": summary,
                                       "real_tokens_per_row": 1.0}}, command="python -m bench")
    assert all(f"| {tuning} 1 |" in text for tuning in adapter_throughput.TUNINGS)
