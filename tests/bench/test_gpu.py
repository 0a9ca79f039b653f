"""bench/gpu.py: `python -m bench --gpu --dry-run`, the GPU section's code on the CPU (a tiny
Qwen2, 3 steps per case, one rank), and the report section it renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import gpu, report

pytestmark = [pytest.mark.slow]

# The wrapper each case must train under at world size 1 (finetune_trainer/strategy.py).
WRAPPERS = {"ddp": "ddp", "zero2": "deepspeed-zero2", "zero3": "deepspeed-zero3",
            "lora ddp": "ddp", "qlora ddp": "ddp"}


def test_gpu_dry_run_measures_every_case_and_renders_the_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(bench_main, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench_main, "WORK", tmp_path / "work")
    output = tmp_path / "benchmarks.md"
    assert bench_main.main(["--gpu", "--dry-run", "--output", str(output)]) == 0
    result = json.loads((tmp_path / "results" / "gpu-dry-run.json").read_text())
    assert result["dry_run"] and result["device"]["kind"] == "cpu"
    assert not (tmp_path / "results" / "gpu.json").exists() and not output.exists()

    cases = {row["case"]: row for row in result["cases"]}
    assert list(cases) == [case.label for case in gpu.CASES]
    # CPU ranks refuse fsdp (finetune_contract/rules.py); every other case runs on the CPU.
    assert cases.pop("fsdp")["status"] == "skipped"
    for label, row in cases.items():
        assert row["status"] == "measured", row.get("reason")
        assert row["wrapper"] == WRAPPERS[label]
        assert row["plan"]["worldSize"] == 1 and row["plan"]["precision"] == "bf16"
        assert row["tokens_per_second_per_gpu"] > 0 and row["mfu"] > 0
        memory = row["memory"]
        assert memory["predicted_growth"] > 0 and memory["measured_growth"] > 0
        # The planner's model states are what the rank holds after its first step.
        assert memory["measured_state_total"] == pytest.approx(
            memory["predicted_state_total"], rel=0.05), label
    assert cases["lora ddp"]["trainable_parameters"] < cases["ddp"]["trainable_parameters"]

    attention = result["attention"]
    assert [k["kernel"] for k in attention["kernels"]] == ["sdpa", "varlen_sdpa"]
    assert attention["trainer_kernel"] == "varlen_sdpa"
    assert attention["tokens"] == gpu.DRY_RUN_SETTINGS.tokens_per_step
    for kernel in attention["kernels"]:
        # the same attention, so the same output up to bf16 rounding
        assert kernel["tokens_per_second"] > 0 and kernel["max_difference"] < 0.1

    section = "\n".join(report.gpu_section(result))
    assert "A dry run" in section and report.GPU_DRY_RUN_COMMAND in section
    for label in cases:
        assert f"| {label} | {WRAPPERS[label]} |" in section
    assert "- fsdp: skipped: fsdp is not supported on CPU" in section
    assert "| varlen_sdpa |" in section
    assert section.splitlines()[0] in capsys.readouterr().out
    # `--gpu` renders section 4 into the report as it stands, the other sections untouched
    document = report.render({"machine": {}}, command="python -m bench")
    updated = report.with_gpu_section(document, result)
    assert updated.split("## 4.")[0] == document.split("## 4.")[0]
    assert "| varlen_sdpa |" in updated and report.with_gpu_section(updated, None) == document


def test_report_says_the_gpu_bench_has_not_run_without_a_result() -> None:
    text = report.render({"machine": {}, "gpu": None}, command="python -m bench")
    section = text.split("## 4.")[1]
    assert "The GPU bench has not been run on a GPU yet" in section
    assert f"{report.GPU_COMMAND} " in section and "%" not in section  # no figures
