"""The search picks the fastest layout that fits (choose.py), within the scaling floor."""

from __future__ import annotations

import pytest
from finetune_operator.planner import plan_job
from finetune_operator.planner.choose import SCALING_EFFICIENCY_FLOOR
from finetune_operator.planner.gpus import GB, Links

from tests.finetune_operator.planner.test_init import by_strategy, make_spec

LLAMA_70B = {"name": "meta-llama/Llama-3.1-70B"}


def test_70b_without_a_batch_runs_zero3_across_nodes_not_offload():
    plan = plan_job(make_spec(model=LLAMA_70B, resources={"maxNodes": 4}))
    assert (plan.strategy, plan.nodes, plan.world_size) == ("zero3", 4, 32)
    assert plan.global_batch_size == 32
    assert plan.micro_batch_size * plan.world_size * plan.gradient_accumulation == 32
    assert "globalBatchSize 32: unset, the default 16 rounded up to a multiple of 32" in (
        plan.reason)
    assert "faster than zero3-offload" in plan.reason and "(runner-up" in plan.reason
    assert plan.suggestion is None


def test_70b_with_batch_16_set_keeps_a_layout_16_divides_and_names_the_faster_batch():
    plan = plan_job(make_spec(model=LLAMA_70B, resources={"maxNodes": 4},
                              training={"globalBatchSize": 16}))
    assert plan.global_batch_size == 16 and 16 % plan.world_size == 0
    assert plan.strategy == "zero3-offload"
    assert plan.suggestion.startswith("zero3 on 4 x 8 H100-80GB would fit without offloading")
    assert "if globalBatchSize were a multiple of 32 (e.g. 32)" in plan.suggestion


def test_the_chosen_layout_is_faster_than_every_alternative_that_fits():
    plan = plan_job(make_spec(model=LLAMA_70B, resources={"maxNodes": 4}))
    fitting = [alt for alt in plan.alternatives if alt.fits]
    assert len(fitting) > 1
    assert plan.estimate.tokens_per_second == max(alt.tokens_per_second for alt in fitting)


def test_alternatives_carry_tokens_per_second_and_step_seconds():
    plan = plan_job(make_spec())
    for alt in plan.alternatives:
        assert alt.tokens_per_second > 0 and alt.step_seconds > 0
    chosen = by_strategy(plan)[plan.strategy]
    assert chosen.tokens_per_second == plan.estimate.tokens_per_second


def test_more_nodes_that_scale_below_the_floor_are_not_chosen():
    plan = plan_job(make_spec(resources={"maxNodes": 4}))
    assert plan.nodes == 1 and plan.global_batch_size == 16
    assert f"below the {SCALING_EFFICIENCY_FLOOR:.0%} scaling floor" in plan.reason


def test_a_fast_network_makes_more_nodes_worth_it():
    fast = Links(intra_node=360 * GB, inter_node=360 * GB, pcie=50 * GB)
    plan = plan_job(make_spec(resources={"maxNodes": 4}), links=fast)
    assert plan.nodes == 4 and plan.global_batch_size == 32


def test_a_batch_the_user_set_is_never_changed():
    plan = plan_job(make_spec(resources={"maxNodes": 4}, training={"globalBatchSize": 16}),
                    links=Links(360 * GB, 360 * GB, 50 * GB))
    assert plan.global_batch_size == 16 and plan.nodes == 2


def test_the_estimate_times_the_run_at_the_predicted_tokens_per_second():
    plan = plan_job(make_spec(model=LLAMA_70B, resources={"maxNodes": 4},
                              training={"maxSteps": 10}))
    e = plan.estimate
    assert e.wall_hours == pytest.approx(e.tokens / e.tokens_per_second / 3600)
    assert e.gpu_hours == pytest.approx(e.wall_hours * plan.world_size)
    chosen = by_strategy(plan)[plan.strategy]
    assert e.step_seconds == pytest.approx(chosen.step_seconds)
