"""Two ranks over gloo, started by torchrun: DDP and DeepSpeed ZeRO-2/3 train the same model
on the same batches and must agree; FSDP on CPU is refused before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from finetune_contract.layout import FINAL_DIR, SUMMARY_FILE

from tests.support.tiny import (
    chat_rows,
    tiny_config,
    tiny_plan,
    tiny_spec,
    torchrun_command,
    trainer_env,
    write_jsonl,
)

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
DEADLINE = 600  # a safety net (the first ZeRO run compiles DeepSpeed's CPU comm op)
STEPS = 12


def _train(tmp_path: Path, strategy: str) -> dict:
    root = tmp_path / strategy
    root.mkdir()
    write_jsonl(root / "train.jsonl", chat_rows(64))
    return _launch(root, strategy)


def _launch(root: Path, strategy: str) -> dict:
    spec = tiny_spec(training={"maxSteps": STEPS, "saveSteps": 6, "loggingSteps": 1},
                     resources={"strategy": strategy, "gpusPerNode": 2})
    plan = tiny_plan(strategy=strategy, world_size=2, gpus_per_node=2, micro_batch_size=4)
    config = tiny_config(root, spec=spec, plan=plan)
    config_path = root / "trainer.yaml"
    config_path.write_text(config.dump_yaml())
    proc = subprocess.run(torchrun_command(config_path, 2), env=trainer_env(), cwd=root,
                          capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((root / "out" / SUMMARY_FILE).read_text())
    assert (root / "out" / FINAL_DIR / "model.safetensors").is_file()
    return summary


@pytest.fixture(scope="module")
def dist_root(tmp_path_factory):
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def runs(dist_root):
    return {strategy: _train(dist_root, strategy) for strategy in ("ddp", "zero2", "zero3")}


def test_ddp_runs_under_ddp_on_two_ranks(runs):
    summary = runs["ddp"]
    assert summary["strategy"] == {"planned": "ddp", "wrapper": "ddp", "worldSize": 2}
    assert summary["steps"] == STEPS
    curve = [p["loss"] for p in summary["lossCurve"]]
    assert sum(curve[-3:]) / 3 < 0.8 * curve[0]


def test_zero2_runs_under_deepspeed_and_agrees_with_ddp(runs):
    ddp, zero = runs["ddp"], runs["zero2"]
    assert zero["strategy"] == {"planned": "zero2", "wrapper": "deepspeed-zero2", "worldSize": 2}
    assert zero["steps"] == STEPS
    assert zero["tokens"] == ddp["tokens"]  # the same batches were seen
    ddp_curve = [p["loss"] for p in ddp["lossCurve"]]
    zero_curve = [p["loss"] for p in zero["lossCurve"]]
    assert len(zero_curve) == len(ddp_curve) == STEPS
    for step, (a, b) in enumerate(zip(ddp_curve, zero_curve, strict=True), start=1):
        assert b == pytest.approx(a, rel=2e-3), f"step {step}: ddp {a} vs zero2 {b}"


def test_zero3_shards_parameters_and_agrees_with_ddp(runs):
    ddp, zero = runs["ddp"], runs["zero3"]
    assert zero["strategy"]["wrapper"] == "deepspeed-zero3"
    assert zero["steps"] == STEPS and zero["tokens"] == ddp["tokens"]
    for a, b in zip(ddp["lossCurve"], zero["lossCurve"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-3)


def test_ddp_resumed_mid_epoch_repeats_the_uninterrupted_losses(runs, dist_root, tmp_path):
    """Two ranks with balanced padding-free batches (finetune_trainer/balance.py): a restart
    from step 6 (mid-epoch; 64 rows are 8 steps) must train on the same rows per rank and
    step, so every later loss, through the epoch boundary, equals the uninterrupted run's."""
    root = tmp_path / "ddp"
    shutil.copytree(dist_root / "ddp", root)
    out = root / "out"
    for leftover in (out / "checkpoint-12", out / FINAL_DIR, out / SUMMARY_FILE):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    resumed = _launch(root, "ddp")
    assert resumed["resumedFrom"] == str(out / "checkpoint-6")
    assert resumed["tokens"] == runs["ddp"]["tokens"]
    for a, b in zip(runs["ddp"]["lossCurve"], resumed["lossCurve"], strict=True):
        assert b["step"] == a["step"] and b["loss"] == pytest.approx(a["loss"], rel=1e-5)


def test_fsdp_on_cpu_is_refused_with_a_clear_message(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    plan = tiny_plan(strategy="fsdp", world_size=2, gpus_per_node=2)
    config = tiny_config(tmp_path, plan=plan)
    config_path = tmp_path / "trainer.yaml"
    config_path.write_text(config.dump_yaml())
    proc = subprocess.run(torchrun_command(config_path, 2), env=trainer_env(),
                          capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert proc.returncode != 0
    assert "finetune-trainer: error: plan.strategy: fsdp is not supported on CPU" in proc.stderr
    # torchrun reports the failed child with its own traceback; none comes from our code
    assert "finetune_trainer/" not in proc.stderr
