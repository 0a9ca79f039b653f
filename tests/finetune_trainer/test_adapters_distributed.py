"""LoRA (DDP, ZeRO-2) and QLoRA (DDP) on two ranks over gloo, started by torchrun: the loss falls, the
saved adapter reloads onto the untouched base and gives the eval loss the run reported (so
the base the ranks trained against is the base on disk), and output.merge gives a model that
loads without peft and gives it too."""

from __future__ import annotations

import json
import subprocess

import pytest
from finetune_contract.layout import FINAL_DIR, SUMMARY_FILE
from finetune_trainer import adapters

from tests.support.adapters import adapter_spec, eval_loss, load_base, make_base, write_data
from tests.support.tiny import tiny_config, tiny_plan, torchrun_command, trainer_env

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
DEADLINE = 600
STEPS = 12
MICRO = 4  # per rank; evaluation on one rank with this micro-batch sees the same batches


def _train_on_two_ranks(tmp_path, tuning, strategy, *, merge=True):
    """The tiny base tuned on 2 ranks by torchrun: the job's spec and the run's summary."""
    write_data(tmp_path)
    make_base(tmp_path)
    spec = adapter_spec(tuning, steps=STEPS, strategy=strategy, merge=merge)
    spec.resources.gpus_per_node = 2
    plan = tiny_plan(strategy=strategy, world_size=2, gpus_per_node=2, micro_batch_size=MICRO)
    config_path = tmp_path / "trainer.yaml"
    config_path.write_text(tiny_config(tmp_path, spec=spec, plan=plan).dump_yaml())
    proc = subprocess.run(torchrun_command(config_path, 2), env=trainer_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return spec, json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())


@pytest.mark.parametrize("tuning,strategy", [("lora", "ddp"), ("qlora", "ddp"),
                                             ("lora", "zero2")])
def test_adapters_train_on_two_ranks(tmp_path, tuning, strategy):
    spec, summary = _train_on_two_ranks(tmp_path, tuning, strategy)
    wrapper = "ddp" if strategy == "ddp" else "deepspeed-zero2"
    assert summary["strategy"] == {"planned": strategy, "wrapper": wrapper, "worldSize": 2}
    assert summary["steps"] == STEPS
    curve = [p["loss"] for p in summary["lossCurve"]]
    assert sum(curve[-3:]) / 3 < 0.97 * curve[0]
    assert summary["trainableParameters"] < summary["parameters"] / 5

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    final = tmp_path / "out" / FINAL_DIR
    reloaded = PeftModel.from_pretrained(load_base(tmp_path, spec), final, is_trainable=True)
    assert eval_loss(tmp_path, reloaded, MICRO) == pytest.approx(summary["evalLoss"], rel=1e-5)
    with reloaded.disable_adapter():  # the base alone (a 4-bit one trains only with adapters)
        untrained = eval_loss(tmp_path, reloaded, MICRO)
    assert summary["evalLoss"] < untrained  # the adapters matter
    merged = AutoModelForCausalLM.from_pretrained(final / adapters.MERGED_DIR)
    assert eval_loss(tmp_path, merged, MICRO) == pytest.approx(summary["evalLoss"], rel=2e-3)


def test_lora_trains_under_zero3_with_the_frozen_base_partitioned(tmp_path):
    """ZeRO-3 partitions the frozen base too; the adapter gathered for saving reloads onto the
    untouched base and gives the run's eval loss (merge is refused under ZeRO-3: rank 0 does
    not hold the whole model)."""
    spec, summary = _train_on_two_ranks(tmp_path, "lora", "zero3", merge=False)
    assert summary["strategy"] == {"planned": "zero3", "wrapper": "deepspeed-zero3",
                                   "worldSize": 2}
    curve = [p["loss"] for p in summary["lossCurve"]]
    assert summary["steps"] == STEPS and sum(curve[-3:]) / 3 < 0.97 * curve[0]

    from peft import PeftModel

    final = tmp_path / "out" / FINAL_DIR
    reloaded = PeftModel.from_pretrained(load_base(tmp_path, spec), final, is_trainable=True)
    assert eval_loss(tmp_path, reloaded, MICRO) == pytest.approx(summary["evalLoss"], rel=1e-5)
