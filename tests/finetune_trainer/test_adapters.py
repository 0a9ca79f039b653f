"""LoRA and QLoRA in this process: what peft and bitsandbytes are asked for, that only the
adapters train, and that the saved adapter and the merged model compute what was trained."""

from __future__ import annotations

import json

import pytest
import torch
from finetune_contract import api
from finetune_contract.layout import FINAL_DIR, SUMMARY_FILE
from finetune_trainer import adapters
from finetune_trainer.errors import TrainerError
from finetune_trainer.training_run import Ranks, run

from tests.support.adapters import adapter_spec, eval_loss, load_base, make_base, write_data
from tests.support.tiny import tiny_config, tiny_spec

STEPS = 20
MICRO = 8  # tiny_plan's micro-batch: evaluation sees the batches the run saw


def test_lora_config_defaults_to_every_linear_layer_of_the_blocks():
    config = adapters.lora_config(api.MethodSpec(tuning="lora"))
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.05)
    assert config.target_modules == "all-linear" and config.modules_to_save is None
    assert config.use_dora is False and config.task_type == "CAUSAL_LM"
    chosen = adapters.lora_config(api.MethodSpec.model_validate({
        "tuning": "lora", "lora": {"rank": 4, "targetModules": ["q_proj", "v_proj"],
                                   "modulesToSave": ["lm_head"], "useDora": True}}))
    assert chosen.r == 4 and set(chosen.target_modules) == {"q_proj", "v_proj"}
    assert chosen.modules_to_save == ["lm_head"] and chosen.use_dora is True


def test_qlora_quantizes_to_nf4_with_double_quantization_and_bf16_compute():
    config = adapters.quantization_config(api.MethodSpec(tuning="qlora"))
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    fp4 = adapters.quantization_config(api.MethodSpec.model_validate({
        "tuning": "qlora", "qlora": {"quantType": "fp4", "doubleQuant": False,
                                     "computeDtype": "fp32"}}))
    assert fp4.bnb_4bit_quant_type == "fp4" and not fp4.bnb_4bit_use_double_quant
    assert fp4.bnb_4bit_compute_dtype == torch.float32


def test_qlora_refuses_random_weights(tmp_path):
    write_data(tmp_path)
    spec = tiny_spec(method={"tuning": "qlora"})
    with pytest.raises(TrainerError, match="qlora quantizes pretrained weights"):
        run(tiny_config(tmp_path, spec=spec), Ranks())


def test_merge_is_refused_without_adapters(tmp_path):
    spec = tiny_spec(output={"merge": True})
    with pytest.raises(TrainerError, match="spec.output.merge: merges adapters"):
        run(tiny_config(tmp_path, spec=spec), Ranks())


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["lora", "qlora"])
def test_only_adapters_train_and_what_is_saved_computes_what_was_trained(tmp_path, tuning):
    write_data(tmp_path)
    make_base(tmp_path)
    spec = adapter_spec(tuning, steps=STEPS)
    result = run(tiny_config(tmp_path, spec=spec), Ranks())
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    curve = [p["loss"] for p in summary["lossCurve"]]
    assert sum(curve[-3:]) / 3 < 0.95 * curve[0]
    # rank 8 on every linear layer of 2 blocks: q, k, v, o, gate, up, down
    h, kv, inter = 64, 32, 128
    per_block = 8 * (7 * h + 2 * h + 2 * kv + 3 * inter)
    assert summary["trainableParameters"] == 2 * per_block
    assert summary["parameters"] == load_base(tmp_path, spec).num_parameters()

    model = result.trainer.model
    untouched = load_base(tmp_path, spec)
    trained_base = adapters.frozen_base(model)
    names = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
             for n, p in trained_base.items()}
    reference = dict(untouched.named_parameters())
    assert names.keys() == reference.keys()
    for name, param in names.items():
        assert torch.equal(param.data, reference[name].data), name  # bit-identical

    final = tmp_path / "out" / FINAL_DIR
    assert (final / "adapter_config.json").is_file()
    assert (final / "adapter_model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()
    from peft import PeftModel

    # is_trainable: a trainer built around an inference-mode PeftModel (nothing requires
    # grad) evaluates it differently; the eval helper goes through a trainer.
    reloaded = PeftModel.from_pretrained(load_base(tmp_path, spec), final, is_trainable=True)
    assert eval_loss(tmp_path, reloaded, MICRO) == pytest.approx(summary["evalLoss"], rel=1e-5)

    from transformers import AutoModelForCausalLM

    merged_dir = final / adapters.MERGED_DIR
    assert not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)  # transformers alone
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert eval_loss(tmp_path, merged, MICRO) == pytest.approx(summary["evalLoss"], rel=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["lora", "qlora"])
def test_an_adapter_run_stopped_after_a_checkpoint_resumes_and_ends_where_the_whole_run_ends(
        tmp_path, tuning):
    write_data(tmp_path)
    make_base(tmp_path)
    spec = adapter_spec(tuning, steps=12, merge=False)
    spec.training.save_steps = spec.training.eval_steps = 6
    whole_run = run(tiny_config(tmp_path, spec=spec), Ranks())
    whole = whole_run.summary
    # As if killed after checkpoint-6: what came later is gone.
    import shutil

    out = tmp_path / "out"
    shutil.rmtree(out / "checkpoint-12")
    shutil.rmtree(out / FINAL_DIR)
    (out / SUMMARY_FILE).unlink()
    resumed_run = run(tiny_config(tmp_path, spec=spec), Ranks())
    resumed = resumed_run.summary
    assert resumed["resumedFrom"].endswith("checkpoint-6")
    # The adapters train in the dtype they started in (bf16 under qlora), resumed or not.
    assert _trainable_dtypes(resumed_run) == _trainable_dtypes(whole_run)
    assert resumed["steps"] == whole["steps"] == 12
    # QLoRA's resumed losses were measured within 1.1e-4 of the whole run's (LoRA's within
    # 1e-5); where QLoRA's small remainder comes from is not known yet (docs/trainer.md).
    rel = 1e-3 if tuning == "qlora" else 1e-4
    after = [p["loss"] for p in resumed["lossCurve"] if p["step"] > 6]
    assert after == pytest.approx([p["loss"] for p in whole["lossCurve"] if p["step"] > 6],
                                  rel=rel)
    assert resumed["evalLoss"] == pytest.approx(whole["evalLoss"], rel=rel)
    assert (out / FINAL_DIR / "adapter_model.safetensors").is_file()


def _trainable_dtypes(result):
    return {name: p.dtype for name, p in result.trainer.model.named_parameters()
            if p.requires_grad}


def test_auto_tuning_trains_what_the_plan_chose(tmp_path):
    from finetune_trainer.training_run import resolve_tuning

    from tests.support.tiny import tiny_plan

    spec = tiny_spec(method={"tuning": "auto"}, output={"merge": True})
    chosen = resolve_tuning(tiny_config(tmp_path, spec=spec, plan=tiny_plan(tuning="lora")))
    assert chosen.spec.method.tuning == "lora" and chosen.spec.output.merge
    full = resolve_tuning(tiny_config(tmp_path, spec=spec, plan=tiny_plan(tuning="full")))
    assert full.spec.method.tuning == "full" and not full.spec.output.merge
    assert spec.method.tuning == "auto"  # the given config is left as it was
    with pytest.raises(TrainerError, match="plan.tuning: required with method.tuning auto"):
        run(tiny_config(tmp_path, spec=spec), Ranks())


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["lora", "qlora"])
def test_adapters_train_with_gradient_checkpointing(tmp_path, tuning):
    """The planner turns checkpointing on for most large adapter plans: the adapters still get
    gradients through checkpointed frozen blocks (TRL makes the inputs require grad)."""
    from tests.support.tiny import tiny_plan

    write_data(tmp_path)
    make_base(tmp_path)
    spec = adapter_spec(tuning, steps=10, merge=False)
    result = run(tiny_config(tmp_path, spec=spec, plan=tiny_plan(gradient_checkpointing=True)),
                 Ranks())
    curve = [p["loss"] for p in result.summary["lossCurve"]]
    assert sum(curve[-3:]) / 3 < 0.97 * curve[0]
    trained = {n: p for n, p in result.trainer.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
