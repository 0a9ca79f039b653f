"""Memory arithmetic: the ZeRO paper, DeepSpeed's estimators, and a real model's saved
activations."""

from __future__ import annotations

import pytest
from finetune_operator.planner import memory as mem
from finetune_operator.planner import models
from finetune_operator.planner.parameters import count_parameters

TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 1024}
GB = 1e9


# --------------------------------------------------------------------------- ZeRO paper


@pytest.mark.parametrize(("stage", "expected_gb"), [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_worked_example(stage, expected_gb):
    """Rajbhandari et al. 2020, Figure 1: 7.5B parameters, N_d = 64, K = 12."""
    psi = 7_500_000_000
    states = mem.model_states(mem.zero_paper_terms(stage), psi, psi, 64)
    assert round(sum(states.values()) / GB, 1) == expected_gb


def test_zero_paper_stage_formulas():
    psi, n = 1_000_000 * 64, 64
    ddp, p_os, p_os_g, p_os_g_p = (
        mem.model_states(mem.zero_paper_terms(stage), psi, psi, n) for stage in range(4))
    assert ddp == {"weights": 2 * psi, "gradients": 2 * psi, "optimizer": 12 * psi}
    assert p_os == {"weights": 2 * psi, "gradients": 2 * psi, "optimizer": 12 * psi // n}
    assert p_os_g == {"weights": 2 * psi, "gradients": 2 * psi // n, "optimizer": 12 * psi // n}
    assert p_os_g_p == {"weights": 2 * psi // n, "gradients": 2 * psi // n,
                        "optimizer": 12 * psi // n}


# --------------------------------------------------------------------------- each strategy


PSI, TRAINABLE, N = 800_000_000, 800_000_000, 8


@pytest.mark.parametrize(("strategy", "precision", "expected"), [
    # DDP (autocast keeps fp32 weights): fp32 weights, fp32 grads + DDP's bucket copy, Adam m, v.
    ("ddp", "bf16", {"weights": 4 * PSI, "gradients": 8 * PSI, "optimizer": 8 * PSI}),
    ("ddp", "fp32", {"weights": 4 * PSI, "gradients": 8 * PSI, "optimizer": 8 * PSI}),
    # DeepSpeed: 16-bit working copies, an fp32 gradient partition, 12 bytes of Adam per param.
    ("zero1", "bf16", {"weights": 2 * PSI, "gradients": 2 * PSI + 4 * PSI // N,
                       "optimizer": 12 * PSI // N}),
    ("zero2", "bf16", {"weights": 2 * PSI, "gradients": (2 + 4) * PSI // N,
                       "optimizer": 12 * PSI // N}),
    ("zero2", "fp32", {"weights": 4 * PSI, "gradients": (4 + 4) * PSI // N,
                       "optimizer": 12 * PSI // N}),
    # Stage 3 keeps the reduce-scattered 16-bit partition besides the fp32 one (measured).
    ("zero3", "bf16", {"weights": 2 * PSI // N, "gradients": (2 + 4) * PSI // N,
                       "optimizer": 12 * PSI // N}),
    # FSDP: everything sharded, fp32 master weights and gradients.
    ("fsdp", "bf16", {"weights": 4 * PSI // N, "gradients": 4 * PSI // N,
                      "optimizer": 8 * PSI // N}),
])
def test_strategy_model_states(strategy, precision, expected):
    terms = mem.state_terms(strategy, precision)
    assert mem.model_states(terms, PSI, TRAINABLE, N) == expected


@pytest.mark.parametrize("strategy", ["ddp", "zero1", "zero2", "zero3", "fsdp"])
def test_sharding_reduces_memory_in_order_and_more_ranks_help_only_sharded(strategy):
    terms = mem.state_terms(strategy, "bf16")
    on_8 = sum(mem.model_states(terms, PSI, PSI, 8).values())
    on_64 = sum(mem.model_states(terms, PSI, PSI, 64).values())
    if strategy == "ddp":
        assert on_8 == on_64
    else:
        assert on_64 < on_8


def test_frozen_parameters_carry_no_gradients_or_optimizer_states():
    terms = mem.state_terms("zero2", "bf16")
    full = mem.model_states(terms, PSI, PSI, N)
    frozen = mem.model_states(terms, PSI, PSI // 4, N)
    assert frozen["weights"] == full["weights"]
    assert frozen["gradients"] == full["gradients"] // 4
    assert frozen["optimizer"] == full["optimizer"] // 4


def test_offload_keeps_states_in_host_memory():
    count = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))
    args = {"trainable": count.total, "precision": "bf16", "world": 8, "gpus_per_node": 8,
                "micro_batch": 1, "seq_len": 1024, "checkpointing": True,
                "layers_with_grad": count.shape.num_layers, "on_cpu": False}
    offload = mem.rank_memory(count, strategy="zero3-offload", **args)
    zero3 = mem.rank_memory(count, strategy="zero3", **args)
    assert offload.weights == offload.gradients == offload.optimizer == 0
    assert offload.overhead == zero3.overhead  # the gathered module stays on the GPU
    assert offload.host_per_node > zero3.host_per_node
    assert offload.total < zero3.total


# --------------------------------------------------------------------------- DeepSpeed


@pytest.fixture(scope="module")
def deepspeed_estimators():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    return estimate_zero2_model_states_mem_needs, estimate_zero3_model_states_mem_needs


LAYOUTS = [(1, 8), (2, 8), (4, 8), (1, 1)]


def _llama8b():
    return count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))


@pytest.mark.parametrize(("nodes", "per_node"), LAYOUTS)
def test_zero2_matches_deepspeed_estimator(deepspeed_estimators, nodes, per_node):
    """Same assumptions: 16-bit weights, 16-bit gradient, fp32 gradient and Adam partitions
    (2 + 18/N bytes per parameter); host RAM: fp32 load copy per rank x 1.5."""
    zero2, _ = deepspeed_estimators
    count = _llama8b()
    world = nodes * per_node
    cpu, gpu = zero2(count.total, num_gpus_per_node=per_node, num_nodes=nodes,
                     cpu_offload=False)
    states = mem.model_states(mem.state_terms("zero2", "bf16"), count.total, count.total, world)
    assert sum(states.values()) == pytest.approx(gpu, abs=4)
    host = mem.host_bytes_per_node(count, strategy="zero2", gpus_per_node=per_node,
                                   offloaded_per_rank=0, rank_total=0, on_cpu=False)
    assert host - per_node * mem.HOST_PROCESS_OVERHEAD == cpu


@pytest.mark.parametrize(("nodes", "per_node"), LAYOUTS)
def test_zero3_matches_deepspeed_estimator(deepspeed_estimators, nodes, per_node):
    """DeepSpeed's estimator counts 18/N bytes per parameter (16-bit weights, fp32 gradient
    and Adam partitions) plus the largest module gathered; the planner adds the 16-bit
    gradient partition stage 3 really keeps (2/N bytes per parameter, docs/benchmarks.md)."""
    _, zero3 = deepspeed_estimators
    count = _llama8b()
    world = nodes * per_node
    cpu, gpu, largest = zero3(count.total, count.largest_module, num_gpus_per_node=per_node,
                              num_nodes=nodes, cpu_offload=False, zero_init=True)
    states = mem.model_states(mem.state_terms("zero3", "bf16"), count.total, count.total, world)
    assert mem.gathered_module_bytes(count, "bf16") == largest
    working_gradients = 2 * count.total // world
    assert sum(states.values()) - working_gradients + largest == pytest.approx(gpu, abs=4)
    host = mem.host_bytes_per_node(count, strategy="zero3", gpus_per_node=per_node,
                                   offloaded_per_rank=0, rank_total=0, on_cpu=False)
    assert host - per_node * mem.HOST_PROCESS_OVERHEAD == cpu


@pytest.mark.parametrize(("nodes", "per_node"), LAYOUTS)
def test_zero3_offload_matches_deepspeed_estimator(deepspeed_estimators, nodes, per_node):
    """Optimizer and parameters offloaded, zero.Init: the GPU keeps the gathered module;
    host RAM per node is 18 bytes per parameter over the nodes, x 1.5."""
    _, zero3 = deepspeed_estimators
    count = _llama8b()
    cpu, gpu, _ = zero3(count.total, count.largest_module, num_gpus_per_node=per_node,
                        num_nodes=nodes, cpu_offload=True, cpu_offload_params=True,
                        zero_init=True)
    memory = mem.rank_memory(count, trainable=count.total, strategy="zero3-offload",
                             precision="bf16", world=nodes * per_node,
                             gpus_per_node=per_node, micro_batch=1, seq_len=16,
                             checkpointing=True, layers_with_grad=32, on_cpu=False)
    assert memory.weights + memory.gradients + memory.optimizer == 0
    assert memory.overhead - mem.GPU_RUNTIME_OVERHEAD == gpu
    host_states = memory.host_per_node - per_node * mem.HOST_PROCESS_OVERHEAD
    assert host_states == pytest.approx(cpu, rel=1e-6)


# --------------------------------------------------------------------------- activations


def test_memory_efficient_attention_drops_the_quadratic_term():
    count = count_parameters(TINY_LLAMA)
    short = [mem.layer_activation_bytes(count, 512, 512, "bf16", me) for me in (True, False)]
    long_ = [mem.layer_activation_bytes(count, 4096, 4096, "bf16", me) for me in (True, False)]
    assert short[0] * 8 == long_[0]  # linear in tokens
    assert long_[1] - long_[0] == 4096 * 4 * 4096 * (4 + 2)  # tokens x heads x seq x bytes


def test_checkpointing_keeps_block_inputs_and_one_block():
    count = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))
    args = {"micro_batch": 1, "seq_len": 4096, "precision": "bf16", "layers_with_grad": 32}
    without = mem.activation_bytes(count, checkpointing=False, **args)
    with_ = mem.activation_bytes(count, checkpointing=True, **args)
    block = mem.layer_activation_bytes(count, 4096, 4096, "bf16")
    head = 4096 * mem.norm_bytes_per_token(4096, "bf16") + 4096 * 4096 * 2
    assert without == 32 * block + head
    assert with_ == 32 * 4096 * 4096 * 2 + block + head


def test_frozen_blocks_save_no_activations():
    count = count_parameters(TINY_LLAMA)
    args = {"micro_batch": 2, "seq_len": 64, "precision": "fp32", "checkpointing": False}
    none = mem.activation_bytes(count, layers_with_grad=0, **args)
    one = mem.activation_bytes(count, layers_with_grad=1, **args)
    two = mem.activation_bytes(count, layers_with_grad=2, **args)
    assert two - one == one - none == mem.layer_activation_bytes(count, 128, 64, "fp32")


def test_logits_are_seq_batch_vocab_three_times():
    count = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))
    assert mem.logits_bytes(count, micro_batch=2, seq_len=4096, precision="bf16") == \
        2 * 4096 * 128256 * (2 + 4 + 4)
    assert mem.logits_bytes(count, micro_batch=2, seq_len=4096, precision="fp32",
                            num_labels=3) == 2 * 3 * 12


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_activations_match_what_a_real_llama_saves_for_backward(dtype_name):
    """Every tensor autograd saves in a forward pass of a tiny Llama (SDPA attention on CPU),
    de-duplicated by storage, against the planner's activations plus the loss's log-softmax."""
    import torch
    import transformers

    dtype = getattr(torch, dtype_name)
    precision = "fp32" if dtype == torch.float32 else "bf16"
    values = {k: v for k, v in TINY_LLAMA.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model("llama", **values)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="sdpa", dtype=dtype)
    batch, seq = 2, 256
    ids = torch.randint(0, TINY_LLAMA["vocab_size"], (batch, seq))
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    measured = sum(n for ptr, n in saved.items() if ptr not in weights)
    count = count_parameters(TINY_LLAMA)
    planned = mem.activation_bytes(count, micro_batch=batch, seq_len=seq, precision=precision,
                                   checkpointing=False, layers_with_grad=2)
    log_softmax = batch * seq * TINY_LLAMA["vocab_size"] * 4
    # The rest is small: rotary tables, RMSNorm's 1/rms, attention's log-sum-exp, the ids.
    assert planned + log_softmax <= measured <= (planned + log_softmax) * 1.05
