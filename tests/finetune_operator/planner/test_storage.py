"""Bytes on disk and in the pods' volumes (planner/storage.py): a checkpoint holds what the
strategy keeps of weights and optimizer states, the output directory its fullest count of
checkpoints, /dev/shm grows with the ranks."""

from __future__ import annotations

import math

import pytest
from finetune_operator.planner import storage
from finetune_operator.planner.gpus import GIB

from tests.support.ftj_samples import gpu_spec, plan, spec

BILLION = 10**9


def _plan(strategy: str, *, parameters: int = BILLION, trainable: int = BILLION,
          gpus_per_node: int = 8):
    return plan(strategy=strategy, gpu="H100-80GB", gpus_per_node=gpus_per_node).model_copy(
        update={"parameters": parameters, "trainable_parameters": trainable})


@pytest.mark.parametrize("strategy,per_parameter", [
    ("ddp", 4 + 8),  # fp32 weights, Adam's momentum and variance
    ("fsdp", 4 + 8),  # the same, in shards
    ("zero2", 2 + 12 + 2),  # bf16 weights, fp32 master and Adam's states, transformers' copy
    ("zero3", 2 + 12 + 2),
    ("zero3-offload", 2 + 12 + 2),
])
def test_a_checkpoint_holds_the_weights_and_optimizer_states_of_all_ranks(strategy,
                                                                          per_parameter):
    assert storage.checkpoint_bytes(spec(), _plan(strategy)) == per_parameter * BILLION


def test_frozen_parameters_save_their_weights_but_no_optimizer_state():
    frozen = _plan("ddp", trainable=BILLION // 10)
    assert storage.checkpoint_bytes(spec(), frozen) == 4 * BILLION + 8 * BILLION // 10
    assert storage.final_model_bytes(spec(), frozen) == 4 * BILLION


@pytest.mark.parametrize("tuning,strategy,per_adapter", [
    ("lora", "ddp", 4 + 8),  # fp32 adapters (peft), Adam's momentum and variance
    ("lora", "zero2", 2 + 12 + 2),  # DeepSpeed casts them; its fp32 master; the 16-bit copy
    ("qlora", "ddp", 2 + 4),  # bf16 adapters and bf16 Adam states
])
def test_an_adapter_checkpoint_holds_the_adapters_states_and_nothing_of_the_base(
        tuning, strategy, per_adapter):
    adapters = BILLION // 100
    job_plan = _plan(strategy, trainable=adapters)
    job_spec = spec(method={"tuning": tuning})
    assert storage.checkpoint_bytes(job_spec, job_plan) == per_adapter * adapters
    weights = {"ddp": 4, "zero2": 2}[strategy] if tuning == "lora" else 2
    assert storage.final_model_bytes(job_spec, job_plan) == weights * adapters


def test_a_merged_model_is_saved_whole_in_the_working_precision_beside_the_adapters():
    job_plan = _plan("ddp", trainable=BILLION // 100)
    alone = storage.final_model_bytes(spec(method={"tuning": "lora"}), job_plan)
    merged = spec(method={"tuning": "lora"}, output={"merge": True})
    assert storage.final_model_bytes(merged, job_plan) == alone + 2 * BILLION  # bf16 plan


def test_tuning_auto_saves_what_the_plan_chose():
    chosen = _plan("ddp", trainable=BILLION // 100).model_copy(update={"tuning": "lora"})
    auto = spec(method={"tuning": "auto"})
    assert storage.checkpoint_bytes(auto, chosen) == 12 * BILLION // 100


def test_the_output_directory_holds_the_kept_checkpoints_the_next_one_and_the_model():
    job_plan = _plan("ddp")
    job_spec = spec(training={"saveTotalLimit": 2})
    checkpoint = storage.checkpoint_bytes(job_spec, job_plan)
    final = storage.final_model_bytes(job_spec, job_plan)
    assert storage.output_bytes(job_spec, job_plan, model_on_output=False) == \
        3 * checkpoint + final + storage.OUTPUT_SMALL_FILES
    # early stopping keeps the best checkpoint besides the limit
    stopping = spec(training={"saveTotalLimit": 2, "earlyStoppingPatience": 3},
                    dataset={"train": {"path": "t.jsonl"}, "evalSplitRatio": 0.1})
    assert storage.output_bytes(stopping, job_plan, model_on_output=False) == \
        4 * checkpoint + final + storage.OUTPUT_SMALL_FILES


def test_a_base_model_cached_on_the_output_volume_adds_its_download():
    job_plan = _plan("ddp")
    without = storage.output_bytes(spec(), job_plan, model_on_output=False)
    assert storage.output_bytes(spec(), job_plan, model_on_output=True) == \
        without + storage.download_bytes(job_plan)
    assert storage.download_bytes(job_plan) == 4 * BILLION  # fp32 on the Hub, at most


def test_volume_sizes_give_each_rank_its_shared_memory():
    job_plan = _plan("zero2", gpus_per_node=4)
    sizes = storage.volume_sizes(gpu_spec(), job_plan, model_on_output=True)
    assert sizes.shared_memory == 4 * GIB
    assert sizes.scratch == storage.SCRATCH
    assert sizes.output == storage.output_bytes(gpu_spec(), job_plan, model_on_output=True)


def _with_step(job_plan, seconds: float):
    estimate = job_plan.estimate.model_copy(update={"step_seconds": seconds})
    return job_plan.model_copy(update={"estimate": estimate})


def test_the_grace_period_allows_a_step_then_the_checkpoint_write_then_the_margin():
    job_plan = _with_step(_plan("ddp"), 20.0)  # a 12 GB checkpoint: 1e9 x (4 + 8) bytes
    write = 12 * BILLION / storage.CHECKPOINT_WRITE_BYTES_PER_SECOND
    grace = storage.termination_grace(spec(), job_plan)
    assert grace.seconds == math.ceil(20 + write + storage.GRACE_MARGIN_SECONDS)
    assert grace.reason.startswith(f"{grace.seconds} s on SIGTERM: a step (20 s)")
    assert "11.2 GiB checkpoint at 125.0 MiB/s" in grace.reason
    assert "cap" not in grace.reason


def test_a_small_checkpoint_still_gets_kubernetes_default_grace_period():
    tiny = _with_step(_plan("ddp", parameters=10**6, trainable=10**6), 0.1)
    assert storage.termination_grace(spec(), tiny).seconds == storage.GRACE_MIN_SECONDS


def test_a_checkpoint_too_large_for_the_cap_says_the_run_falls_back_to_its_periodic_one():
    huge = _with_step(_plan("zero3", parameters=70 * BILLION, trainable=70 * BILLION), 30.0)
    grace = storage.termination_grace(spec(), huge)  # 16 bytes a parameter: 1.1 TB
    assert grace.seconds == storage.GRACE_MAX_SECONDS
    assert "over the 3600 s cap" in grace.reason
    assert "resumes from its last periodic one" in grace.reason


def test_adapters_checkpoint_in_seconds_where_full_fine_tuning_needs_minutes():
    full = _with_step(_plan("ddp", parameters=8 * BILLION, trainable=8 * BILLION), 10.0)
    lora = full.model_copy(update={"trainable_parameters": 40 * 10**6})
    full_grace = storage.termination_grace(spec(), full).seconds
    lora_grace = storage.termination_grace(spec(method={"tuning": "lora"}), lora).seconds
    assert full_grace > 10 * 60
    assert lora_grace < 60


def test_a_planned_job_carries_its_grace_period_and_a_step_time():
    from finetune_operator.planner import plan_job

    job_plan = plan_job(gpu_spec())
    assert job_plan.estimate.step_seconds > 0
    expected = storage.termination_grace(gpu_spec(), job_plan)
    assert job_plan.termination_grace_seconds == expected.seconds
    assert job_plan.termination_grace_reason == expected.reason
