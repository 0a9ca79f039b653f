"""The planner's work does not grow with the layer count: every sum over the blocks is one
run of equal blocks times its multiplicity, never a loop or a list per layer (40 million
layers once took the operator 660 MB and 8 s in one reconcile).

Work is counted, not timed: the Python line events (sys.settrace) a function runs, which
must be the same for 10^3 and 10^6 layers, and the memory it allocates (tracemalloc).
"""

from __future__ import annotations

import copy
import random
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from finetune_contract.strategies import NAMES, ZERO3_MAX_REUSE_DISTANCE
from finetune_operator import bounds
from finetune_operator.planner import plan_job
from finetune_operator.planner.memory import rank_memory, zero3_retained_elements
from finetune_operator.planner.parameters import ParameterCount, count_parameters

from tests.support.ftj_samples import spec, spec_dict

RNG = random.Random(1503)


def line_events(fn: Callable[[], Any]) -> int:
    """Python lines (and calls, returns) run by `fn`."""
    events = 0

    def trace(frame, event, arg):
        nonlocal events
        events += 1
        return trace

    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(None)
    return events


def with_layers(count: ParameterCount, layers: int) -> ParameterCount:
    return replace(count, shape=replace(count.shape, num_layers=layers))


def per_module_reference(count: ParameterCount) -> int:
    """The per-layer walk the planner did before (a list of every module): the reference
    the closed form must equal."""
    modules = [count.head or count.embedding, count.final_norm]
    modules += [count.per_layer] * count.shape.num_layers
    if count.head:
        modules.append(count.embedding)
    after, retained = 0, 0
    for size in modules:
        if 2 * after >= ZERO3_MAX_REUSE_DISTANCE:
            break
        retained += size
        after += size
    return min(retained, count.total)


def random_count() -> ParameterCount:
    """A ParameterCount whose sizes straddle the reuse distance in every way: blocks far
    smaller than it, about as large, larger; a head alone above it; tied or not."""
    scale = ZERO3_MAX_REUSE_DISTANCE
    per_layer = RNG.choice([1, RNG.randrange(1, 1000), RNG.randrange(scale // 1000, scale),
                            RNG.randrange(scale, 3 * scale), scale // 2, scale // 2 + 1])
    embedding = RNG.choice([RNG.randrange(1, 10**6), RNG.randrange(scale // 4, scale)])
    head = RNG.choice([0, embedding, RNG.randrange(1, 2 * scale)])
    count = count_parameters({"model_type": "llama", "hidden_size": 64,
                              "num_hidden_layers": 2, "num_attention_heads": 4})
    return ParameterCount(with_layers(count, RNG.randrange(1, 5000)).shape, embedding,
                          per_layer, RNG.randrange(1, 10**4), head)


@pytest.mark.parametrize("count", [random_count() for _ in range(300)])
def test_zero3_retention_counted_per_run_equals_the_per_module_walk(count):
    assert zero3_retained_elements(count) == per_module_reference(count)


# Blocks of 120 parameters: a million of them stay within the reuse distance, so the old
# walk went through every one.
TINY = count_parameters({"model_type": "llama", "hidden_size": 4, "intermediate_size": 4,
                         "num_hidden_layers": 2, "num_attention_heads": 1, "vocab_size": 16})


def test_zero3_retention_does_the_same_work_for_a_thousand_and_a_million_layers():
    small, large = with_layers(TINY, 10**3), with_layers(TINY, 10**6)
    assert 2 * large.total < ZERO3_MAX_REUSE_DISTANCE  # all kept: the same path for both
    assert line_events(lambda: zero3_retained_elements(small)) \
        == line_events(lambda: zero3_retained_elements(large))


def test_zero3_retention_allocates_nothing_per_layer():
    count = with_layers(TINY, 10**6)  # a list of its modules would take 8 MB
    tracemalloc.start()
    try:
        zero3_retained_elements(count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


@pytest.mark.parametrize("strategy", NAMES)
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("on_cpu", [False, True])
def test_rank_memory_does_the_same_work_for_a_thousand_and_a_million_layers(
        strategy, checkpointing, on_cpu):
    def memory(layers: int) -> Any:
        count = with_layers(TINY, layers)
        return rank_memory(count, trainable=count.total, strategy=strategy, precision="bf16",
                           world=8, gpus_per_node=8, micro_batch=2, seq_len=512,
                           checkpointing=checkpointing, layers_with_grad=layers,
                           on_cpu=on_cpu)

    assert line_events(lambda: memory(10**3)) == line_events(lambda: memory(10**6))


def test_the_largest_allowed_config_plans_in_bounded_work():
    """The most layers allowed, the largest vocabulary and context, widths that keep the
    total within the parameter bound: the whole plan, every layout tried, runs about as
    many lines as the same model's with two layers (the layouts tried may differ a little)."""
    def plan(layers: int) -> Callable[[], Any]:
        d = copy.deepcopy(spec_dict())
        d["model"]["config"] = {
            "model_type": "mixtral", "num_hidden_layers": layers, "hidden_size": 8192,
            "intermediate_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8,
            "num_local_experts": 16, "num_experts_per_tok": 2,
            "max_position_embeddings": bounds.CONFIG_BOUNDS["max_position_embeddings"].limit,
            "vocab_size": bounds.CONFIG_BOUNDS["vocab_size"].limit}
        d["resources"] = {"gpu": "H100-80GB", "gpusPerNode": 8, "maxNodes": 64}
        job = spec(**d)
        return lambda: plan_job(job)

    largest = bounds.CONFIG_BOUNDS["num_hidden_layers"].limit
    deepest, shallow = line_events(plan(largest)), line_events(plan(2))
    print(f"FIGURE plan line events: {deepest} for {largest} layers, {shallow} for 2")
    assert abs(deepest - shallow) <= shallow // 100
