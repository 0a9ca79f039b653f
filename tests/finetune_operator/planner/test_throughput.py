"""The throughput model: compute with attention, ring collectives, offloading."""

from __future__ import annotations

from dataclasses import replace

import pytest
from finetune_operator.planner import throughput as tp
from finetune_operator.planner.estimate import training_flops, utilization
from finetune_operator.planner.gpus import CATALOG, GB, LINKS, Links
from finetune_operator.planner.models import find_model
from finetune_operator.planner.parameters import count_parameters

H100 = CATALOG["H100-80GB"]
COUNT = count_parameters(find_model("meta-llama/Llama-3.1-8B"))


def work(**changes) -> tp.Work:
    base = tp.Work(count=COUNT, trainable=COUNT.total, backward_through=COUNT.active,
                   layers_with_grad=COUNT.shape.num_layers, precision="bf16", seq_len=4096,
                   micro_batch=1, accumulation=1, checkpointing=False)
    return replace(base, **changes)


def run(w: tp.Work, strategy: str, nodes: int = 1, gpus_per_node: int = 8,
        links: Links | None = None) -> tp.Step:
    return tp.step(w, strategy=strategy, nodes=nodes, gpus_per_node=gpus_per_node, gpu=H100,
                   links=links or LINKS[H100.name])


def test_attention_flops_are_twelve_seq_hidden_per_layer_when_every_layer_trains():
    assert tp.attention_flops_per_token(4096, 8192, 32, 32) == 12 * 8192 * 4096 * 32


def test_frozen_layers_pay_only_the_forward_attention():
    assert tp.attention_flops_per_token(1000, 100, 10, 0) == 4 * 100 * 1000 * 10


def test_flops_per_token_are_the_model_flops_plus_attention():
    w = work()
    dense = training_flops(1, active=COUNT.active, trainable=COUNT.total,
                           backward_through=COUNT.active)
    attention = 12 * 4096 * COUNT.shape.hidden_size * COUNT.shape.num_layers
    assert tp.flops_per_token(w) == pytest.approx(dense + attention)


def test_compute_is_the_ranks_tokens_at_the_assumed_utilization():
    w = work(micro_batch=2, accumulation=3)
    mfu = utilization(H100, checkpointing=False)
    expected = 6 * 4096 * tp.flops_per_token(w) / (989e12 * mfu)
    assert tp.compute_seconds(w, H100) == pytest.approx(expected)


def test_checkpointing_makes_compute_slower():
    assert tp.compute_seconds(work(checkpointing=True), H100) > tp.compute_seconds(work(), H100)


def test_ddp_all_reduces_fp32_gradients_once_per_step():
    f = 7 / 8
    assert tp.communication_bytes("ddp", work(accumulation=4), 8) == pytest.approx(
        2 * f * 4 * COUNT.total)


def test_zero1_reduce_scatters_gradients_and_all_gathers_weights_once():
    f = 7 / 8
    assert tp.communication_bytes("zero1", work(accumulation=4), 8) == pytest.approx(
        f * (2 * COUNT.total + 2 * COUNT.total))


def test_zero2_reduces_gradients_every_micro_batch():
    one = tp.communication_bytes("zero2", work(accumulation=1), 8)
    four = tp.communication_bytes("zero2", work(accumulation=4), 8)
    assert four - one == pytest.approx(3 * 7 / 8 * 2 * COUNT.total)


@pytest.mark.parametrize("strategy", ["zero3", "fsdp", "zero3-offload"])
def test_parameter_sharding_sends_about_three_times_the_weights(strategy):
    sent = tp.communication_bytes(strategy, work(), 8)
    assert sent == pytest.approx(7 / 8 * 3 * 2 * COUNT.total)
    assert sent > tp.communication_bytes("zero2", work(), 8)


def test_one_rank_sends_nothing():
    assert tp.communication_bytes("zero3", work(), 1) == 0
    assert run(work(), "ddp", gpus_per_node=1).communication == 0


def test_communication_grows_when_the_ranks_span_nodes():
    one_node = run(work(), "zero3", nodes=1, gpus_per_node=8)
    two_nodes = run(work(), "zero3", nodes=2, gpus_per_node=4)
    assert two_nodes.communication > 5 * one_node.communication
    assert two_nodes.compute == one_node.compute


def test_bandwidths_can_be_overridden():
    slow = Links(intra_node=36 * GB, inter_node=4.5 * GB, pcie=5 * GB)
    assert run(work(), "zero2", links=slow).communication == pytest.approx(
        10 * run(work(), "zero2").communication)


def test_offloading_adds_pcie_and_cpu_adam_time():
    offload = run(work(), "zero3-offload")
    assert offload.offload > 0 and run(work(), "zero3").offload == 0
    adam = COUNT.total * tp.ADAM_HOST_BYTES_PER_PARAM / tp.HOST_ADAM_BANDWIDTH
    pcie = 3 * 2 * COUNT.total / 8 / LINKS[H100.name].pcie
    assert offload.offload == pytest.approx(adam + pcie)


def test_step_time_is_the_sum_of_its_parts_without_overlap():
    s = run(work(), "zero3-offload")
    assert tp.OVERLAP == 0
    assert s.seconds == pytest.approx(s.compute + s.communication + s.offload)
    assert s.tokens == 8 * 4096
    assert s.tokens_per_second == pytest.approx(s.tokens / s.seconds)
