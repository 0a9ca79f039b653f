"""plan_job: the choice of layout, every override, the nothing-fits path, errors, estimates."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from finetune_contract.api import FineTuneJobSpec, FineTuneJobStatus
from finetune_operator.planner import DatasetStats, PlanningError, plan_job
from finetune_operator.planner import memory as mem
from finetune_operator.planner.gpus import DEFAULT_CPU_RANK_MEMORY, GIB
from finetune_operator.validation import validate_job

TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 1024}


def make_spec(**sections: Any) -> FineTuneJobSpec:
    spec: dict[str, Any] = {"model": {"name": "meta-llama/Llama-3.1-8B"},
                            "dataset": {"train": {"path": "train.jsonl"}},
                            "resources": {"gpu": "H100-80GB", "gpusPerNode": 8}}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if key != "model" else value
    return FineTuneJobSpec.model_validate(spec)


def tiny_cpu(**sections: Any) -> FineTuneJobSpec:
    base = {"model": {"name": "tiny", "init": "random", "config": TINY_LLAMA},
            "resources": {"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 1},
            "training": {"maxSeqLength": 256, "globalBatchSize": 16}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return make_spec(**base)


def by_strategy(plan) -> dict[str, Any]:
    return {alt.strategy: alt for alt in plan.alternatives}


# --------------------------------------------------------------------------- the choice


def test_llama_8b_on_one_h100_node_picks_the_fastest_that_fits():
    plan = plan_job(make_spec())
    assert (plan.strategy, plan.nodes, plan.gpus_per_node, plan.world_size) == ("zero2", 1, 8, 8)
    assert plan.fits and plan.precision == "bf16"
    alternatives = by_strategy(plan)
    # Less-sharded strategies do not fit at the same settings (zero1 only with checkpointing,
    # which is slower).
    assert not alternatives["ddp"].fits and not alternatives["zero1"].fits
    assert alternatives["zero3"].fits
    assert alternatives["zero3"].tokens_per_second < alternatives["zero2"].tokens_per_second
    assert "ddp needs" in plan.reason and "zero2 on 1 x 8 H100-80GB" in plan.reason
    assert "(runner-up" in plan.reason
    # 4 nodes would be faster, but not by enough to pay for 4x the GPUs.
    assert "below the 60% scaling floor" in plan.reason
    assert plan.memory_per_gpu.total <= mem.usable(plan.gpu_memory)


def test_70b_on_one_node_offloads_and_reports_host_memory():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                              resources={"maxNodes": 1}))
    assert plan.fits and plan.strategy == "zero3-offload" and plan.nodes == 1
    assert plan.memory_per_gpu.weights == plan.memory_per_gpu.optimizer == 0
    # 18 bytes per parameter on the host, times DeepSpeed's 1.5 buffer factor.
    assert plan.host_memory_per_node > 18 * 70e9 * 1.5
    assert "host RAM" in plan.reason
    assert not by_strategy(plan)["zero3"].fits


def test_70b_on_four_nodes_shards_instead_of_offloading():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                              resources={"maxNodes": 4}, training={"globalBatchSize": 32}))
    assert (plan.strategy, plan.nodes) == ("zero3", 4)
    assert "faster than zero3-offload on 2 x 8 H100-80GB (runner-up" in plan.reason


def test_global_batch_that_no_larger_layout_divides_explains_the_offload():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                              resources={"maxNodes": 4}, training={"globalBatchSize": 16}))
    assert plan.strategy == "zero3-offload" and plan.global_batch_size == 16
    assert "zero3 on 4 x 8 H100-80GB would fit without offloading" in plan.suggestion
    assert "if globalBatchSize were a multiple of 32 (e.g. 32)" in plan.suggestion


@pytest.mark.parametrize("global_batch", [8, 16, 48, 64, 96])
def test_batch_arithmetic_reaches_the_global_batch(global_batch):
    plan = plan_job(make_spec(training={"globalBatchSize": global_batch, "maxSeqLength": 1024}))
    assert plan.micro_batch_size * plan.world_size * plan.gradient_accumulation == global_batch
    assert plan.global_batch_size == global_batch


def test_largest_micro_batch_that_fits_is_chosen():
    training = {"maxSeqLength": 1024, "globalBatchSize": 64}
    plan = plan_job(make_spec(training=training))
    assert plan.fits and 1 < plan.micro_batch_size < 8
    twice = plan_job(make_spec(
        training={**training, "microBatchSize": 2 * plan.micro_batch_size,
                  "gradientCheckpointing": plan.gradient_checkpointing},
        resources={"strategy": plan.strategy, "nodes": plan.nodes}))
    assert not twice.fits
    longer = plan_job(make_spec(training={**training, "maxSeqLength": 4096}))
    assert longer.micro_batch_size < plan.micro_batch_size


def test_checkpointing_only_when_needed():
    small = plan_job(tiny_cpu())
    assert small.gradient_checkpointing is False
    big = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                             resources={"maxNodes": 1}))
    assert big.gradient_checkpointing is True


def test_freeze_trains_fewer_parameters_and_needs_less_memory():
    full = plan_job(make_spec(resources={"strategy": "ddp", "gpu": "H200-141GB"}))
    frozen = plan_job(make_spec(resources={"strategy": "ddp", "gpu": "H200-141GB"},
                                method={"tuning": "freeze", "trainableLayers": 2}))
    assert frozen.trainable_parameters < full.trainable_parameters / 5
    assert frozen.parameters == full.parameters
    assert frozen.memory_per_gpu.optimizer < full.memory_per_gpu.optimizer
    assert frozen.memory_per_gpu.weights == full.memory_per_gpu.weights
    assert frozen.fits and not full.fits


# --------------------------------------------------------------------------- overrides


def test_strategy_override_is_honoured_even_when_it_does_not_fit():
    plan = plan_job(make_spec(resources={"strategy": "ddp"}))
    assert plan.strategy == "ddp" and not plan.fits
    assert [a.strategy for a in plan.alternatives] == ["ddp"]
    assert "zero1 on 1 x 8 H100-80GB would fit" in plan.suggestion


def test_nodes_override():
    plan = plan_job(make_spec(resources={"nodes": 2, "maxNodes": 2}))
    assert plan.nodes == 2 and plan.world_size == 16
    assert plan.strategy == "zero1"  # more ranks make zero1 fit


@pytest.mark.parametrize(("asked", "gpu", "expected"), [
    ("auto", "H100-80GB", "bf16"), ("auto", "V100-32GB", "fp16"), ("auto", "T4-16GB", "fp16"),
    ("auto", "cpu", "fp32"), ("fp32", "H100-80GB", "fp32"), ("bf16", "cpu", "bf16"),
])
def test_precision(asked, gpu, expected):
    spec = make_spec(model={"name": "Qwen/Qwen2.5-0.5B"}, resources={"gpu": gpu},
                     training={"precision": asked, "maxSeqLength": 512})
    assert plan_job(spec).precision == expected


def test_fp32_doubles_the_weights_of_zero_stages():
    args = {"model": {"name": "Qwen/Qwen2.5-0.5B"}, "resources": {"strategy": "zero2"}}
    bf16 = plan_job(make_spec(**args, training={"precision": "bf16"}))
    fp32 = plan_job(make_spec(**args, training={"precision": "fp32"}))
    assert fp32.memory_per_gpu.weights == 2 * bf16.memory_per_gpu.weights


def test_micro_batch_override():
    plan = plan_job(make_spec(training={"microBatchSize": 2, "maxSeqLength": 512}))
    assert plan.micro_batch_size == 2 and plan.gradient_accumulation == 1


@pytest.mark.parametrize("forced", [True, False])
def test_checkpointing_override(forced):
    plan = plan_job(tiny_cpu(training={"gradientCheckpointing": forced}))
    assert plan.gradient_checkpointing is forced


@pytest.mark.parametrize(("asked", "expected"), [
    ("auto", "padding-free"), ("packed", "packed"), ("none", "none"),
    ("padding-free", "padding-free")])
def test_packing(asked, expected):
    assert plan_job(tiny_cpu(training={"packing": asked})).packing == expected


# --------------------------------------------------------------------------- cpu


def test_cpu_rank_memory_comes_from_pod_memory_split_over_ranks():
    plan = plan_job(tiny_cpu(resources={"memory": "6Gi"}))
    assert plan.gpu_memory == 3 * GIB


def test_cpu_rank_memory_from_gpu_memory_gib_then_default():
    assert plan_job(tiny_cpu(resources={"gpuMemoryGiB": 1.5})).gpu_memory == int(1.5 * GIB)
    assert plan_job(tiny_cpu()).gpu_memory == DEFAULT_CPU_RANK_MEMORY


def test_cpu_plan_for_the_tiny_llama():
    plan = plan_job(tiny_cpu(training={"maxSteps": 30}))
    assert plan.fits and plan.strategy == "ddp" and plan.world_size == 2
    assert plan.parameters == 205_120 and plan.parameter_source == "config"
    assert plan.host_memory_per_node == 2 * plan.memory_per_gpu.total
    assert plan.estimate.tokens == 30 * 16 * 256


def test_auto_never_picks_fsdp_on_cpu():
    # A rank memory in which only the parameter-sharding strategies fit, and among them FSDP
    # (16 bytes/param sharded) fits where ZeRO-3 (18 + gathered module) does not.
    big = {**TINY_LLAMA, "hidden_size": 512, "intermediate_size": 1024,
           "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
           "vocab_size": 512}
    spec_for = lambda gpu, memory: tiny_cpu(
        model={"name": "m", "init": "random", "config": big},
        resources={"gpu": gpu, "gpuMemoryGiB": memory, "gpusPerNode": 8},
        training={"maxSeqLength": 16, "globalBatchSize": 8, "precision": "fp32"})
    memory = _memory_where_only_fsdp_fits(spec_for)
    on_gpu = plan_job(spec_for("H100-80GB", memory))
    assert on_gpu.strategy == "fsdp"
    on_cpu = plan_job(spec_for("cpu", memory))
    assert on_cpu.strategy != "fsdp"
    assert "fsdp" not in [a.strategy for a in on_cpu.alternatives]


def _memory_where_only_fsdp_fits(spec_for) -> float:
    for tenth in range(1, 400):
        gib = tenth / 100
        plan = plan_job(spec_for("H100-80GB", gib))
        alternatives = by_strategy(plan)
        if alternatives["fsdp"].fits and not alternatives["zero3"].fits:
            return gib
    raise AssertionError("no memory size separates fsdp from zero3")


# --------------------------------------------------------------------------- nothing fits


def test_nothing_fits_is_a_plan_with_reason_and_suggestion():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                              resources={"gpu": "T4-16GB", "maxNodes": 1}))
    assert not plan.fits
    assert plan.reason.startswith("nothing fits within 1 x 8 T4-16GB")
    assert "would fit" in plan.suggestion
    assert plan.memory_per_gpu.total > mem.usable(plan.gpu_memory)


def test_nothing_fits_on_cpu_suggests_more_memory_per_rank():
    plan = plan_job(tiny_cpu(resources={"gpuMemoryGiB": 0.1}))
    assert not plan.fits
    assert "resources.memory" in plan.suggestion


def test_validation_reports_a_plan_that_does_not_fit():
    doc = {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
           "metadata": {"name": "big"},
           "spec": make_spec(resources={"strategy": "ddp"}).to_wire()}
    _, problems = validate_job(doc)
    assert len(problems) == 1 and problems[0].path == "spec.resources"
    assert "does not fit" in problems[0].message and "would fit" in problems[0].message


# --------------------------------------------------------------------------- errors


def test_unknown_gpu_names_the_field_and_the_choices():
    with pytest.raises(PlanningError) as err:
        plan_job(make_spec(resources={"gpu": "H900"}))
    assert err.value.field == "spec.resources.gpu"
    assert "unknown GPU type 'H900'" in err.value.message and "A100-80GB" in err.value.message


def test_custom_gpu_with_memory_plans_without_time_estimate():
    plan = plan_job(make_spec(resources={"gpu": "MI300X", "gpuMemoryGiB": 192},
                              training={"maxSteps": 10}))
    assert plan.gpu == "MI300X" and plan.gpu_memory == 192 * GIB and plan.fits
    assert plan.estimate.gpu_hours == 0 and plan.estimate.tokens > 0


def test_model_that_cannot_be_sized():
    with pytest.raises(PlanningError) as err:
        plan_job(make_spec(model={"name": "someone/unknown-model"}))
    assert err.value.field == "spec.model"
    assert "model.parameters" in err.value.message and "model.config" in err.value.message


def test_a_model_only_reading_it_sizes_needs_sizing():
    from finetune_operator.planner import NeedsSizing, needs_sizing

    unknown = make_spec(model={"name": "someone/unknown-model"})
    assert needs_sizing(unknown)
    with pytest.raises(NeedsSizing):
        plan_job(unknown)
    for sized in (make_spec(), tiny_cpu(), make_spec(model={"name": "x/y", "parameters": "7B"}),
                  make_spec(model={"name": "x/y", "config": TINY_LLAMA})):
        assert not needs_sizing(sized)
    assert needs_sizing(make_spec(model={"path": "models/base"}))
    assert needs_sizing(make_spec(model={"name": "x/y", "config": {"max_position_embeddings": 8}}))


PRETRAINED = {"name": "someone/new-model", "init": "pretrained", "config": None}


def sized(config: dict[str, Any], parameters: int | None, model: str = "someone/new-model"):
    from finetune_contract.api import ModelSizing

    return ModelSizing(model=model, commit="a" * 40, config=config, parameters=parameters,
                       safetensors_files=1)


def test_the_safetensors_count_wins_over_the_config_arithmetic():
    spec = tiny_cpu(model=PRETRAINED)
    from_config = plan_job(spec, sizing=sized(TINY_LLAMA, None))
    assert from_config.parameter_source == "config" and from_config.parameters == 205_120
    exact = plan_job(spec, sizing=sized(TINY_LLAMA, 205_120))
    assert exact.parameter_source == "safetensors" and exact.parameters == 205_120
    # An architecture the arithmetic only estimates: the headers hold the truth.
    newarch = {**TINY_LLAMA, "model_type": "newarch"}
    assert plan_job(spec, sizing=sized(newarch, None)).parameter_source == "estimate"
    truth = plan_job(spec, sizing=sized(newarch, 250_001))
    assert truth.parameter_source == "safetensors" and truth.parameters == 250_001
    assert truth.trainable_parameters == 250_001


def test_the_exact_count_keeps_the_checkpoint_when_the_task_changes_the_head():
    spec = tiny_cpu(model=PRETRAINED, method={"task": "classification",
                                                                 "numLabels": 3},
                    dataset={"format": "classification", "train": {"path": "t.jsonl"}})
    plan = plan_job(spec, sizing=sized(TINY_LLAMA, 205_120))
    lm_head, classifier = 1024 * 64, 3 * 64
    assert plan.parameters == 205_120 - lm_head + classifier


def test_model_config_overrides_what_reading_the_model_gave():
    spec = tiny_cpu(model={**PRETRAINED, "config": {"num_hidden_layers": 1}})
    plan = plan_job(spec, sizing=sized(TINY_LLAMA, 205_120))
    assert plan.parameter_source == "config" and plan.parameters < 205_120


def test_a_sizing_is_not_used_for_a_model_the_spec_sizes():
    plan = plan_job(make_spec(), sizing=sized(TINY_LLAMA, 1234))
    assert plan.parameter_source == "catalog" and plan.parameters > 8e9


def test_bf16_on_v100_is_refused():
    with pytest.raises(PlanningError) as err:
        plan_job(make_spec(resources={"gpu": "V100-32GB"}, training={"precision": "bf16"}))
    assert err.value.field == "spec.training.precision"


def test_global_batch_not_divisible_by_any_layout():
    with pytest.raises(PlanningError) as err:
        plan_job(make_spec(training={"globalBatchSize": 12}))
    assert err.value.field == "spec.training.globalBatchSize"
    assert "multiple of 8" in err.value.message


def test_micro_batch_not_dividing_the_per_rank_share():
    with pytest.raises(PlanningError) as err:
        plan_job(make_spec(training={"globalBatchSize": 16, "microBatchSize": 3}))
    assert err.value.field == "spec.training.microBatchSize"


def test_bad_config_value_names_the_config_key():
    with pytest.raises(PlanningError) as err:
        plan_job(tiny_cpu(model={"config": {**TINY_LLAMA, "hidden_size": "big"}}))
    assert err.value.field == "spec.model.config.hidden_size"


def test_bad_pod_memory_quantity():
    with pytest.raises(PlanningError) as err:
        plan_job(tiny_cpu(resources={"memory": "lots"}))
    assert err.value.field == "spec.resources.memory"


# --------------------------------------------------------------------------- sources


def test_parameter_sources(tmp_path):
    assert plan_job(make_spec()).parameter_source == "catalog"
    assert plan_job(tiny_cpu()).parameter_source == "config"
    hint = plan_job(make_spec(model={"name": "someone/x", "parameters": "7.5B"}))
    assert hint.parameter_source == "hint" and hint.parameters == 7_500_000_000
    estimate = plan_job(tiny_cpu(model={"config": {**TINY_LLAMA, "model_type": "newarch"}}))
    assert estimate.parameter_source == "estimate"


def test_config_json_under_model_path(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps(TINY_LLAMA))
    spec = tiny_cpu(model={"name": None, "init": "pretrained", "config": None, "path": "base"})
    plan = plan_job(spec, data_root=tmp_path)
    assert plan.parameters == 205_120 and plan.parameter_source == "config"
    with pytest.raises(PlanningError):  # the operator cannot read it and has no hint
        plan_job(spec)


def test_invalid_config_json_names_file_and_line(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text('{\n  "model_type": "llama",\n  oops\n}')
    spec = tiny_cpu(model={"name": None, "init": "pretrained", "config": None, "path": "base"})
    with pytest.raises(PlanningError) as err:
        plan_job(spec, data_root=tmp_path)
    assert err.value.field == "spec.model.path"
    assert "config.json:3: not valid JSON" in err.value.message


def test_config_overrides_catalog_values():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-8B",
                                     "config": {"num_hidden_layers": 16}}))
    assert plan.parameter_source == "config"
    assert plan.parameters < plan_job(make_spec()).parameters


def test_vocab_from_trained_tokenizer():
    config = {k: v for k, v in TINY_LLAMA.items() if k != "vocab_size"}
    small = plan_job(tiny_cpu(model={"config": config, "tokenizer": {"train": {"vocabSize": 512}}}))
    large = plan_job(tiny_cpu(model={"config": config, "tokenizer": {"train": {"vocabSize": 2048}}}))
    assert large.parameters - small.parameters == 2 * (2048 - 512) * 64


# --------------------------------------------------------------------------- estimate


def test_estimate_from_dataset_stats():
    spec = tiny_cpu(training={"epochs": 2})
    plan = plan_job(spec, dataset_stats=DatasetStats(rows=1000, mean_tokens_per_row=100))
    assert plan.estimate.tokens == 2 * 1000 * 100
    assert plan.estimate.flops == 6 * plan.parameters * plan.estimate.tokens
    assert plan.estimate.gpu_hours > 0 and plan.estimate.wall_hours == pytest.approx(
        plan.estimate.gpu_hours / 2, rel=1e-3)
    assert 0 < plan.estimate.cost_usd.low <= plan.estimate.cost_usd.high


def test_estimate_from_max_steps_assumes_full_length_rows_and_says_so():
    plan = plan_job(make_spec(training={"maxSteps": 100}))
    assert plan.estimate.tokens == 100 * 16 * 4096
    assert "full-length sequences assumed" in plan.estimate.basis
    assert plan.estimate.gpu_hours > 0 and plan.estimate.cost_usd.high > 0


def test_without_data_size_the_estimate_is_empty_and_says_why():
    plan = plan_job(make_spec())
    assert plan.estimate.tokens == 0 and plan.estimate.gpu_hours == 0
    assert "training.maxSteps" in plan.estimate.basis


def test_freeze_costs_fewer_flops_than_full():
    stats = DatasetStats(rows=100)
    full = plan_job(make_spec(), dataset_stats=stats)
    frozen = plan_job(make_spec(method={"tuning": "freeze", "trainableLayers": 2}),
                      dataset_stats=stats)
    assert frozen.estimate.tokens == full.estimate.tokens
    assert frozen.estimate.flops < 0.5 * full.estimate.flops
    # The forward pass still runs through every parameter.
    assert frozen.estimate.flops > 2 * frozen.parameters * frozen.estimate.tokens


def test_plan_goes_into_status():
    plan = plan_job(make_spec(training={"maxSteps": 10}))
    status = FineTuneJobStatus.model_validate({"plan": plan.to_wire()})
    assert status.plan == plan


def test_offload_is_bounded_by_host_ram_of_the_usual_instance_or_pod_memory():
    args = {"model": {"name": "meta-llama/Llama-3.1-70B"},
            "training": {"maxSeqLength": 128, "globalBatchSize": 4}}
    one_t4 = plan_job(make_spec(resources={"gpu": "T4-16GB", "gpusPerNode": 1, "maxNodes": 1},
                                **args))
    assert not one_t4.fits and "host RAM per node" in one_t4.reason
    with_ram = plan_job(make_spec(resources={"gpu": "T4-16GB", "gpusPerNode": 1, "maxNodes": 1,
                                             "memory": "2Ti"}, **args))
    assert with_ram.fits and with_ram.strategy == "zero3-offload"
    assert with_ram.host_memory_per_node <= 2 * 1024 * GIB


def test_offload_is_bounded_by_the_ram_of_the_node_shape_with_that_many_gpus():
    # A node with 4 L4 (g6.12xlarge, g2-standard-48) has 192 GiB, not 4 x the RAM per GPU of
    # the 8-GPU instance.
    four_l4 = plan_job(make_spec(resources={"gpu": "L4-24GB", "gpusPerNode": 4, "maxNodes": 1}))
    assert four_l4.strategy == "zero3-offload"
    assert four_l4.host_memory_available_per_node == 192 * GIB
    assert four_l4.host_memory_source == "g6.12xlarge, g2-standard-48"
    assert not four_l4.fits and "host RAM per node > 192.0 GiB" in four_l4.reason
    with_ram = plan_job(make_spec(resources={"gpu": "L4-24GB", "gpusPerNode": 4, "maxNodes": 1,
                                             "memory": "384Gi"}))
    assert with_ram.fits and with_ram.strategy == "zero3-offload"
    assert with_ram.host_memory_available_per_node == 384 * GIB
    assert with_ram.host_memory_source == "spec.resources.memory"


def test_a_plan_that_keeps_its_states_on_the_gpus_is_not_held_to_a_node_shape():
    plan = plan_job(make_spec())
    assert plan.strategy == "zero2"
    assert plan.host_memory_available_per_node == 0 and plan.host_memory_source == ""


def test_offload_plans_size_cpus_for_cpu_adam():
    offload = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                                 resources={"maxNodes": 1}))
    assert offload.strategy == "zero3-offload"
    assert offload.cpu_per_node == mem.CPU_ADAM_CPUS_PER_RANK * 8
    assert plan_job(make_spec()).cpu_per_node == 0  # the optimizer steps on the GPUs
    assert plan_job(tiny_cpu()).cpu_per_node == 2  # one core per CPU rank


# --------------------------------------------------------------------------- lora and qlora


def test_70b_qlora_fits_one_80_gb_gpu():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                              method={"tuning": "qlora"},
                              resources={"gpusPerNode": 1, "maxNodes": 1}))
    assert plan.fits and (plan.strategy, plan.world_size) == ("ddp", 1)
    assert plan.trainable_parameters < plan.parameters / 100
    assert [alt.strategy for alt in plan.alternatives] == ["ddp"]  # qlora trains under ddp


def test_70b_lora_in_bf16_needs_its_frozen_base_sharded_over_at_least_two_gpus():
    one = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                             method={"tuning": "lora"}, training={"precision": "bf16"},
                             resources={"gpusPerNode": 1, "maxNodes": 1}))
    assert not one.fits
    node = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                              method={"tuning": "lora"}, training={"precision": "bf16"},
                              resources={"maxNodes": 1}))
    assert node.fits and node.strategy in ("zero3", "fsdp") and node.world_size >= 2
    assert not by_strategy(node)["ddp"].fits and "zero1" not in by_strategy(node)


def test_lora_plans_the_adapters_as_the_trainable_parameters():
    plan = plan_job(make_spec(method={"tuning": "lora"},
                              resources={"gpu": "A10G-24GB", "gpusPerNode": 1}))
    assert plan.trainable_parameters == 41_943_040  # r 16 on every linear layer
    full = plan_job(make_spec(resources={"gpu": "A10G-24GB", "gpusPerNode": 1}))
    assert plan.memory_per_gpu.optimizer < full.memory_per_gpu.optimizer / 50 or not full.fits


def test_an_unknown_target_module_is_a_planning_error_on_its_field():
    with pytest.raises(PlanningError) as err:
        plan_job(make_spec(method={"tuning": "lora", "lora": {"targetModules": ["qkv"]}}))
    assert err.value.field == "spec.method.lora.targetModules"


# Published LoRA/QLoRA memory figures, planned at the settings each source states (one GPU,
# bf16, gradient checkpointing, dropout 0), and how far the plan is from each: the
# comparison of docs/planner.md ("LoRA and QLoRA against published figures"). `tensors`
# compares the plan less its runtime overhead (CUDA context, workspaces) with a peak of
# allocated tensors; `total` compares the whole plan with a GPU memory requirement.
TORCHTUNE_TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PUBLISHED = [
    # source, model, parameters hint, tuning, seq, micro, rank, targets, figure, unit, compare,
    # (lowest, highest) ratio of plan to figure
    ("torchtune", "meta-llama/Llama-3.1-8B", None, "lora", 2048, 2, 8, TORCHTUNE_TARGETS,
     16.2, GIB, "tensors", (1.0, 1.2)),
    ("torchtune", "meta-llama/Llama-3.1-8B", None, "qlora", 2048, 2, 8, TORCHTUNE_TARGETS,
     7.4, GIB, "tensors", (1.0, 1.2)),
    ("llama-factory", "meta-llama/Llama-2-7b-hf", None, "lora", 2048, 1, 8, None, 16, 1e9,
     "total", (0.8, 1.2)),
    ("llama-factory", "example/model-14b", "14B", "lora", 2048, 1, 8, None, 32, 1e9,
     "total", (0.8, 1.2)),
    ("llama-factory", "example/model-30b", "30B", "lora", 2048, 1, 8, None, 64, 1e9,
     "total", (0.8, 1.2)),
    ("llama-factory", "meta-llama/Llama-3.1-70B", None, "lora", 2048, 1, 8, None, 160, 1e9,
     "total", (0.8, 1.2)),
    ("llama-factory", "meta-llama/Llama-2-7b-hf", None, "qlora", 2048, 1, 8, None, 6, 1e9,
     "total", (1.2, 1.3)),  # over by the 2 GiB runtime term; tensors alone: 0.88
    ("llama-factory", "example/model-14b", "14B", "qlora", 2048, 1, 8, None, 12, 1e9,
     "total", (0.8, 1.2)),
    ("llama-factory", "example/model-30b", "30B", "qlora", 2048, 1, 8, None, 24, 1e9,
     "total", (0.79, 1.2)),
    ("llama-factory", "meta-llama/Llama-3.1-70B", None, "qlora", 2048, 1, 8, None, 48, 1e9,
     "total", (0.8, 1.2)),
    ("unsloth", "meta-llama/Llama-3.1-8B", None, "qlora", 512, 1, 16, None, 6, 1e9,
     "total", (1.4, 1.5)),  # Unsloth's kernels and offloaded checkpoints; tensors: 1.08
    ("unsloth", "meta-llama/Llama-3.1-70B", None, "qlora", 512, 1, 16, None, 41, 1e9,
     "total", (1.0, 1.2)),
]


@pytest.mark.parametrize("case", PUBLISHED, ids=lambda c: f"{c[0]}-{c[1]}-{c[2] or ''}-{c[3]}")
def test_lora_and_qlora_plans_against_published_figures(case):
    (_, model, hint, tuning, seq, micro, rank, targets, figure, unit, compare,
     (lowest, highest)) = case
    lora: dict[str, Any] = {"rank": rank, "alpha": 2 * rank, "dropout": 0.0}
    if targets:
        lora["targetModules"] = targets
    plan = plan_job(make_spec(
        model={"name": model, **({"parameters": hint} if hint else {})},
        method={"tuning": tuning, "lora": lora},
        training={"maxSeqLength": seq, "globalBatchSize": micro, "microBatchSize": micro,
                  "gradientCheckpointing": True, "precision": "bf16"},
        resources={"gpu": "H200-141GB", "gpuMemoryGiB": 1000, "gpusPerNode": 1,
                   "maxNodes": 1, "strategy": "ddp"}))
    total = plan.memory_per_gpu.total
    planned = total - mem.GPU_RUNTIME_OVERHEAD if compare == "tensors" else total
    assert lowest <= planned / (figure * unit) <= highest


def test_when_full_fine_tuning_does_not_fit_the_suggestion_names_lora_and_qlora():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-8B-Instruct"},
                              resources={"gpu": "A10G-24GB", "gpusPerNode": 1}))
    assert not plan.fits
    lora, qlora = plan.suggestion.split("; ")[-2:]
    # The fewest GPUs that do, and the fastest layout within the bounds: adapters send
    # little, so four nodes of one GPU each scale well.
    assert re.fullmatch(r"tuning: lora would fit on 2 x 1 A10G-24GB \(zero2, [\d.]+ GiB/GPU\), "
                        r"fastest as zero2 on 4 x 1", lora), lora
    assert re.fullmatch(r"tuning: qlora would fit on 1 x 1 A10G-24GB \(ddp, [\d.]+ GiB/GPU\), "
                        r"fastest as ddp on 4 x 1", qlora), qlora
    fits = plan_job(make_spec())
    assert fits.fits and fits.suggestion is None


def test_at_torchtunes_sequence_length_the_suggestion_is_lora_on_one_gpu():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-8B-Instruct"},
                              training={"maxSeqLength": 2048},
                              resources={"gpu": "A10G-24GB", "gpusPerNode": 1}))
    assert not plan.fits
    assert "tuning: lora would fit on 1 x 1 A10G-24GB (ddp, " in plan.suggestion


def test_a_forced_node_count_gets_the_adapters_on_those_nodes_only():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-8B-Instruct"},
                              resources={"gpu": "A10G-24GB", "gpusPerNode": 1, "nodes": 4,
                                         "maxNodes": 4}))
    assert "tuning: qlora would fit (ddp on 4 x 1 A10G-24GB, " in plan.suggestion


@pytest.mark.parametrize("model,gpu,per_node,max_nodes,chosen", [
    ("meta-llama/Llama-3.1-8B", "H100-80GB", 8, 1, "full"),
    ("meta-llama/Llama-3.1-8B", "L40S-48GB", 1, 1, "lora"),
    ("meta-llama/Llama-3.1-70B", "H100-80GB", 1, 1, "qlora"),
])
def test_auto_tuning_is_full_if_it_fits_else_lora_else_qlora(model, gpu, per_node, max_nodes,
                                                             chosen):
    plan = plan_job(make_spec(model={"name": model}, method={"tuning": "auto"},
                              resources={"gpu": gpu, "gpusPerNode": per_node,
                                         "maxNodes": max_nodes}))
    assert plan.fits and plan.tuning == chosen
    assert plan.reason.startswith(f"tuning auto chose {chosen} (")
    for before in ("full", "lora")[:("full", "lora", "qlora").index(chosen)]:
        assert f"{before} does not fit: " in plan.reason
    concrete = plan_job(make_spec(model={"name": model}, method={"tuning": chosen},
                                  resources={"gpu": gpu, "gpusPerNode": per_node,
                                             "maxNodes": max_nodes}))
    assert concrete.tuning == chosen
    assert plan.memory_per_gpu == concrete.memory_per_gpu


def test_auto_tuning_that_fits_nowhere_says_what_each_needs():
    plan = plan_job(make_spec(model={"name": "meta-llama/Llama-3.1-70B"},
                              method={"tuning": "auto"},
                              resources={"gpu": "L4-24GB", "gpusPerNode": 1, "maxNodes": 1}))
    assert not plan.fits and plan.tuning == "qlora"
    assert plan.reason.startswith("tuning auto: nothing fits (full does not fit: ")
    assert "; lora does not fit: " in plan.reason and "; qlora does not fit: " in plan.reason
