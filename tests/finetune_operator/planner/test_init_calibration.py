"""plan_job(calibration=...): a measured factor scales each layout's memory per rank when its
(model family, strategy, GPU) has runs, and the plan says what it applied; without one the
plan is the planner's own."""

from __future__ import annotations

import math

from finetune_operator import calibration as cal
from finetune_operator.planner import memory as mem
from finetune_operator.planner import plan_job

from tests.finetune_operator.planner.test_init import by_strategy, make_spec, tiny_cpu

ONE_NODE = make_spec(resources={"maxNodes": 1})  # Llama 3.1 8B on 8 H100: zero2, 60.5 GiB


def measured(*runs: tuple[str, str, str, float]) -> cal.Table:
    table = cal.EMPTY
    for i, (family, strategy, gpu, ratio) in enumerate(runs):
        table = cal.record(table, cal.Key(family, strategy, gpu),
                           cal.Run(uid=f"u-{i}", job=f"team/j{i}", ratio=ratio))
    return table


def test_without_runs_for_its_key_the_plan_is_the_planners_own():
    own = plan_job(ONE_NODE)
    assert own.calibration is None
    unrelated = measured(("qwen2", "zero2", "H100-80GB", 1.9), ("llama", "zero2", "A100-80GB",
                                                                 1.9))
    for table in (cal.EMPTY, unrelated):
        looked_up = plan_job(ONE_NODE, calibration=table)
        assert looked_up.model_copy(update={"calibration": None}) == own
        assert looked_up.calibration.model_dump() == {
            "key": "llama.zero2.H100-80GB", "model_family": "llama", "factor": 1.0, "runs": 0,
            "largest_ratio": None, "estimated_bytes": own.memory_per_gpu.total}


def test_a_factor_above_one_scales_the_memory_and_the_plan_says_so():
    own = plan_job(ONE_NODE)
    plan = plan_job(ONE_NODE, calibration=measured(("llama", "zero2", "H100-80GB", 1.05),
                                                   ("llama", "zero2", "H100-80GB", 1.1)))
    assert (plan.strategy, plan.micro_batch_size) == (own.strategy, own.micro_batch_size)
    c = plan.calibration
    assert (c.key, c.factor, c.runs, c.largest_ratio) == ("llama.zero2.H100-80GB", 1.1, 2, 1.1)
    assert c.estimated_bytes == own.memory_per_gpu.total
    assert plan.memory_per_gpu.total == math.ceil(own.memory_per_gpu.total * 1.1)
    # The items stay as estimated: only the peak is scaled.
    assert plan.memory_per_gpu.activations == own.memory_per_gpu.activations
    assert plan.reason.endswith("; memory calibrated x1.1 from 2 recent run(s) of llama, zero2 "
                                "on H100-80GB (planner's estimate 60.5 GiB)")


def test_a_borderline_layout_that_measured_high_gives_way_to_more_sharding():
    own = plan_job(ONE_NODE)
    assert own.strategy == "zero2" and own.memory_per_gpu.total > mem.usable(own.gpu_memory) / 1.3
    plan = plan_job(ONE_NODE, calibration=measured(("llama", "zero2", "H100-80GB", 1.3)))
    assert plan.fits and plan.strategy == "zero3"
    # zero3 has no runs of its own: its estimate stands, and the plan says so.
    assert plan.memory_per_gpu.total == by_strategy(own)["zero3"].memory_per_gpu
    assert (plan.calibration.key, plan.calibration.runs) == ("llama.zero3.H100-80GB", 0)
    assert "calibrated" not in plan.reason
    zero2 = by_strategy(plan)["zero2"]
    assert zero2.memory_per_gpu > mem.usable(plan.gpu_memory)


def test_a_forced_strategy_that_measured_high_turns_checkpointing_on():
    forced = make_spec(resources={"maxNodes": 1, "strategy": "zero2"})
    assert not plan_job(forced).gradient_checkpointing
    plan = plan_job(forced, calibration=measured(("llama", "zero2", "H100-80GB", 1.2)))
    assert plan.fits and plan.gradient_checkpointing


def test_a_cpu_job_that_measured_high_no_longer_fits_its_memory():
    spec = tiny_cpu(resources={"memory": "1800Mi", "strategy": "ddp"})
    own = plan_job(spec)
    assert own.fits
    plan = plan_job(spec, calibration=measured(("llama", "ddp", "cpu", 1.5)))
    assert not plan.fits
    assert plan.memory_per_gpu.total > mem.usable(plan.gpu_memory)
    # A CPU rank's memory is the pod's: its host memory grows with it.
    assert plan.host_memory_per_node == plan.gpus_per_node * plan.memory_per_gpu.total
    assert "memory calibrated x1.5" in plan.reason
    assert plan.suggestion.startswith("give each rank at least")


def test_a_factor_below_one_lets_a_job_ask_for_less():
    own = plan_job(ONE_NODE)
    plan = plan_job(ONE_NODE, calibration=measured(("llama", "zero2", "H100-80GB", 0.5)))
    assert plan.calibration.factor == cal.MIN_FACTOR and plan.calibration.largest_ratio == 0.5
    assert plan.memory_per_gpu.total == math.ceil(own.memory_per_gpu.total * cal.MIN_FACTOR)


def test_a_model_sized_by_a_hint_is_calibrated_under_its_own_name():
    spec = make_spec(model={"name": "acme/house-7b", "parameters": "7B"})
    plan = plan_job(spec, calibration=measured(("acme/house-7b", "zero2", "H100-80GB", 1.1)))
    assert plan.parameter_source == "hint"
    assert plan.calibration.model_family == "acme/house-7b"
    assert plan.calibration.key == f"acme_house-7b.{plan.strategy}.H100-80GB"


def test_tuning_auto_plans_each_tuning_with_the_calibration():
    spec = make_spec(method={"tuning": "auto"}, resources={"maxNodes": 1})
    plan = plan_job(spec, calibration=cal.EMPTY)
    assert plan.tuning == "full" and plan.calibration is not None
