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
# The planner's own terms (`state_terms`, what plan_job counts) against the paper. What the
# implementations keep beyond it is checked against DeepSpeed's estimators below, and DDP's
# states against the tensors AdamW really holds (test_memory_measured.py).

# Rajbhandari et al. 2020, Figure 1: GB per device for 7.5B parameters on N_d = 64, K = 12.
ZERO_PAPER_FIGURE_1 = [("ddp", 120.0), ("zero1", 31.4), ("zero2", 16.6), ("zero3", 1.9)]
# The one term DeepSpeed keeps beyond the paper's accounting: the fp32 gradient partition
# its optimizer step reads (DeepSpeed's own estimators count it too).
FP32_GRADIENT_PARTITION = "fp32 gradient partition"


@pytest.mark.parametrize(("strategy", "expected_gb"), ZERO_PAPER_FIGURE_1)
def test_the_planners_states_are_the_zero_papers_figure_1_plus_the_fp32_gradient_partition(
        strategy, expected_gb):
    """DDP keeps 16 bytes per parameter as the paper does (fp32 weights serving as the
    master copy, fp32 gradients, Adam's moments); the ZeRO stages keep the paper's
    2 + 2 + K bytes, sharded as it says, plus 4/N bytes of fp32 gradient partition."""
    psi, n = 7_500_000_000, 64
    terms = mem.state_terms(strategy, "bf16")
    total = sum(mem.model_states(terms, psi, psi, n).values())
    beyond = [t for t in terms if t.what == FP32_GRADIENT_PARTITION]
    extra = sum(mem.model_states(tuple(beyond), psi, psi, n).values())
    assert round((total - extra) / GB, 1) == expected_gb
    assert extra == (4 * psi // n if strategy != "ddp" else 0)


@pytest.mark.parametrize(("strategy", "sharded"), [
    ("ddp", set()),  # stage 0
    ("zero1", {"optimizer"}),  # P_os
    ("zero2", {"optimizer", "gradients"}),  # P_os+g
    ("zero3", {"optimizer", "gradients", "weights"}),  # P_os+g+p
])
def test_each_zero_stage_shards_the_states_the_paper_names(strategy, sharded):
    terms = [t for t in mem.state_terms(strategy, "bf16") if t.what != FP32_GRADIENT_PARTITION]
    assert {t.item for t in terms if t.sharded} == sharded
    assert {t.item for t in terms if not t.sharded} == {"weights", "gradients",
                                                      "optimizer"} - sharded


# --------------------------------------------------------------------------- each strategy


PSI, TRAINABLE, N = 800_000_000, 800_000_000, 8


def test_fsdp_keeps_ddps_states_divided_over_the_ranks():
    """FSDP keeps what DDP keeps (its states are measured in test_memory_measured.py),
    split over the N ranks."""
    ddp = mem.model_states(mem.state_terms("ddp", "bf16"), PSI, TRAINABLE, 1)
    fsdp = mem.model_states(mem.state_terms("fsdp", "bf16"), PSI, TRAINABLE, N)
    assert fsdp == {item: size // N for item, size in ddp.items()}


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
    # DeepSpeed's estimate is the largest module gathered with its gradient (4 bytes per
    # parameter); the planner counts that, the parameters ZeRO-3 keeps gathered between
    # forward and backward, the prefetch bucket and the reduce buckets.
    working = memory.overhead - mem.GPU_RUNTIME_OVERHEAD
    assert working >= gpu
    assert working == mem.zero_working_bytes(count, "zero3-offload", "bf16", on_cpu=False)
    host_states = memory.host_per_node - per_node * mem.HOST_PROCESS_OVERHEAD
    assert host_states == pytest.approx(cpu, rel=1e-6)


# --------------------------------------------------------------------------- activations
# What autograd really saves is measured against these formulas on tiny models in
# tests/finetune_operator/planner/test_memory_measured.py, with and without checkpointing;
# here, their structure.

FP32 = mem.compute_of("zero2", "fp32")
BF16 = mem.compute_of("zero2", "bf16")


def test_precision_decides_compute_and_residual_bytes():
    assert mem.compute_of("zero3", "bf16") == mem.Compute(2, 2, False)
    assert mem.compute_of("ddp", "bf16") == mem.Compute(2, 4, True)  # autocast, fp32 weights
    assert mem.compute_of("ddp", "fp32") == mem.Compute(4, 4, False)


def test_the_per_token_terms_of_one_block():
    """h = 64, q = 64, kv = 32, I = 128 in bf16: two norms (fp32 input, 1/rms, normalized),
    the q/k/v and MLP inputs, q, k, v, two outputs, log-sum-exp, four I-wide MLP tensors."""
    count = count_parameters(TINY_LLAMA)
    norms = 2 * (64 * (4 + 2) + 4)
    varlen = norms + 2 * 2 * 64 + 2 * (64 + 2 * 32 + 2 * 64) + 4 * 4 + 4 * 128 * 2
    assert mem.layer_activation_bytes(count, 1, compute=BF16, attention="varlen") == varlen
    # Masked SDPA: k and v repeated to every head, one output, plus the mask per block.
    masked = varlen - 2 * (64 + 2 * 32 + 2 * 64) + 2 * 4 * 64
    assert mem.layer_activation_bytes(count, 1, compute=BF16, attention="masked",
                                      mask=100) == masked + 100 * 2


def test_autocast_saves_input_copies_and_16_bit_weights():
    count = count_parameters(TINY_LLAMA)
    auto = mem.compute_of("ddp", "bf16")
    plain = mem.layer_activation_bytes(count, 1000, compute=BF16)
    cast = mem.layer_activation_bytes(count, 1000, compute=auto)
    # fp32 residual in both norms (+2 h each), three more 16-bit input copies, the weights.
    assert cast - plain == 1000 * (2 * 2 * 64 + 3 * 2 * 64) + 2 * count.per_layer


def test_the_packed_mask_is_tokens_squared_per_block():
    assert mem.mask_elements(2, 4096, "padding-free") == (2 * 4096) ** 2
    assert mem.mask_elements(2, 4096, "packed") == (2 * 4096) ** 2
    assert mem.mask_elements(2, 4096, "padded") == 2 * 4096 * 4096
    assert mem.attention_kind(on_cpu=True, packing="padding-free") == "varlen"
    assert mem.attention_kind(on_cpu=False, packing="padding-free") == "masked"
    assert mem.attention_kind(on_cpu=True, packing="padded") == "masked"


def test_eager_attention_keeps_the_softmax():
    count = count_parameters(TINY_LLAMA)
    eager = mem.layer_activation_bytes(count, 4096, compute=BF16, attention="eager",
                                       seq_len=4096)
    masked = mem.layer_activation_bytes(count, 4096, compute=BF16, attention="masked")
    lse = 4 * 4
    assert eager - masked == 4096 * (4 * 4096 * (4 + 2) - lse)


def test_frozen_blocks_save_no_activations():
    count = count_parameters(TINY_LLAMA)
    args = {"micro_batch": 2, "seq_len": 64, "precision": "fp32", "checkpointing": False}
    one = mem.activation_bytes(count, layers_with_grad=1, **args)
    two = mem.activation_bytes(count, layers_with_grad=2, **args)
    assert two - one == mem.layer_activation_bytes(count, 128, compute=FP32)


def test_the_fused_head_never_holds_the_logits():
    """TRL's fused head: a tile buffer, per-token label/log Z/entropy/mask and the fp32
    hidden-state gradient, and the head's weight gradient in fp32 plus its 16-bit cast."""
    count = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))
    tokens, v, h = 2 * 4096, 128256, 4096
    head = mem.logits_bytes(count, micro_batch=2, seq_len=4096, precision="bf16")
    assert head == (4096 * 32768 * 2 + tokens * (17 + 4 * h) + v * h * (4 + 2))
    full_logits = tokens * v * (2 + 4 + 4)
    assert head < full_logits / 2
    assert mem.logits_bytes(count, micro_batch=2, seq_len=4096, precision="fp32",
                            num_labels=3) == 2 * 3 * 12


def test_on_a_cpu_the_head_buffer_is_resident_only_where_the_vocabulary_reaches():
    count = count_parameters(TINY_LLAMA)  # vocabulary 1024 < the 32768-wide tile
    gpu = mem.logits_bytes(count, micro_batch=1, seq_len=512, precision="fp32")
    cpu = mem.logits_bytes(count, micro_batch=1, seq_len=512, precision="fp32", on_cpu=True)
    tiles_gpu = 512 * 32768 * 4
    tiles_cpu = 512 * 1024 * (4 + 4 * mem.HEAD_CPU_TILE_TEMPORARIES)
    assert gpu - cpu == tiles_gpu - tiles_cpu


# --------------------------------------------------------------------------- the peak


def _rank(strategy, **overrides):
    count = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))
    args = {"trainable": count.total, "strategy": strategy, "precision": "bf16", "world": 8,
            "gpus_per_node": 8, "micro_batch": 1, "seq_len": 4096, "checkpointing": False,
            "layers_with_grad": 32, "on_cpu": False, **overrides}
    return count, mem.rank_memory(count, **args)


@pytest.mark.parametrize("strategy", ["ddp", "zero1", "zero2", "zero3", "fsdp"])
def test_the_total_is_below_the_sum_of_the_items_unless_every_state_persists(strategy):
    _, m = _rank(strategy)
    items = m.weights + m.gradients + m.optimizer + m.activations + m.logits + m.overhead
    if strategy == "ddp":  # every DDP state persists (gradients live in the buckets)
        assert m.total == items
    else:  # some gradients exist only from the backward or during the step
        assert m.total < items


def test_adam_and_activations_coexist_but_not_the_step_only_gradients():
    """ZeRO-2: the fp32 gradient partition exists only during the step, the activations
    only during forward/backward; both phases hold weights and Adam's states."""
    count, m = _rank("zero2")
    persistent = m.weights + m.optimizer + 2 * count.total // 8  # + 16-bit partition buffer
    working = m.overhead - mem.GPU_RUNTIME_OVERHEAD
    assert m.total == mem.GPU_RUNTIME_OVERHEAD + persistent + working + m.activations + m.logits


def test_gradient_accumulation_keeps_gradients_through_the_forward():
    """FSDP frees gradients after the step: with one micro-batch per step they only replace
    the activations; accumulating, they are live while the next micro-batch saves its own."""
    _, single = _rank("fsdp", accumulation=1)
    _, accumulating = _rank("fsdp", accumulation=4)
    assert accumulating.total - single.total == accumulating.gradients


def test_zero3_keeps_parameters_gathered_within_the_reuse_distance():
    small = count_parameters(TINY_LLAMA)
    assert mem.zero3_retained_elements(small) == small.total  # all of a small model
    big = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))
    # 8B: only the head; everything before it lies more than half the reuse distance away.
    assert mem.zero3_retained_elements(big) == big.head


def test_zero_working_sets():
    count = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))
    buckets = mem.zero_bucket_elements(4096)
    assert buckets == {"reduce_bucket_size": 4096 ** 2,
                       "stage3_prefetch_bucket_size": int(0.9 * 4096 ** 2),
                       "stage3_param_persistence_threshold": 40960}
    # Stages 1-2: two reduce buckets with overlap_comm on a GPU, one on a CPU.
    assert mem.zero_working_bytes(count, "zero2", "bf16", on_cpu=False) == 2 * 4096 ** 2 * 2
    assert mem.zero_working_bytes(count, "zero2", "bf16", on_cpu=True) == 4096 ** 2 * 2
    # Stage 3: one bucket, the retained parameters, the prefetch bucket, one module's gradient.
    zero3 = mem.zero_working_bytes(count, "zero3", "bf16", on_cpu=False)
    assert zero3 == 2 * (4096 ** 2 + mem.zero3_retained_elements(count)
                         + int(0.9 * 4096 ** 2) + count.largest_module)


# --------------------------------------------------------------------------- adapters

LLAMA_8B = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))


def _adapters(tuning: str, trainable: int = 41_943_040, **fields) -> mem.Adapters:
    from finetune_operator.planner.parameters import quantized_parameters

    values = {"tuning": tuning, "trainable": trainable, "rank": 16, "dropout": True,
              "adapted": 7, "inputs_per_token": 5 * 4096 + 4096 + 14336,
              "largest_linear": 4096 * 14336,
              "quantized": quantized_parameters(LLAMA_8B) if tuning == "qlora" else 0}
    return mem.Adapters(**{**values, **fields})


def _lora_rank(strategy: str, adapters: mem.Adapters, world: int = 1, **kw) -> mem.Memory:
    args = {"strategy": strategy, "precision": "bf16", "world": world,
            "gpus_per_node": world, "micro_batch": 1, "seq_len": 2048, "checkpointing": True,
            "layers_with_grad": 32, "on_cpu": False}
    return mem.rank_memory(LLAMA_8B, trainable=adapters.trainable, adapters=adapters,
                           **{**args, **kw})


def test_lora_keeps_the_frozen_base_in_16_bits_and_states_for_the_adapters_only():
    adapters = _adapters("lora")
    m = _lora_rank("ddp", adapters)
    a = adapters.trainable
    assert m.weights == 2 * LLAMA_8B.total + 4 * a  # bf16 base, fp32 adapters
    assert m.gradients == 4 * a and m.optimizer == 8 * a  # nothing for the frozen base
    full = mem.rank_memory(LLAMA_8B, trainable=LLAMA_8B.total, strategy="ddp",
                           precision="bf16", world=1, gpus_per_node=1, micro_batch=1,
                           seq_len=2048, checkpointing=True, layers_with_grad=32,
                           on_cpu=False)
    assert m.total < full.total / 5
    # the frozen head gets no weight gradient
    assert m.logits < full.logits


def test_zero3_and_fsdp_shard_the_frozen_base_and_zero2_does_not():
    adapters = _adapters("lora")
    base = 2 * LLAMA_8B.total
    for strategy, sharded in (("zero2", False), ("zero3", True), ("fsdp", True)):
        m = _lora_rank(strategy, adapters, world=8)
        frozen = base // 8 if sharded else base
        assert frozen <= m.weights < frozen + 4 * adapters.trainable, strategy


def test_qlora_stores_the_block_linears_in_4_bits_with_their_scales():
    adapters = _adapters("qlora")
    q = adapters.quantized
    assert mem.quantized_bytes(q, True) == int(q / 2 + q / 64 * (1 + 4 / 256))
    assert mem.quantized_bytes(q, False) == int(q / 2 + q / 64 * 4)
    m = _lora_rank("ddp", adapters)
    a = adapters.trainable
    # bf16 adapters with bf16 gradients and AdamW states (TRL casts them for a 4-bit base)
    assert m.weights == mem.quantized_bytes(q, True) + 2 * (LLAMA_8B.total - q) + 2 * a
    assert m.gradients == 2 * a and m.optimizer == 4 * a
    assert m.weights < 0.4 * 2 * LLAMA_8B.total  # embeddings and head stay 16-bit


def test_adapter_dropout_saves_a_copy_and_a_mask_of_each_adapted_input():
    with_dropout = _lora_rank("ddp", _adapters("lora"), checkpointing=False)
    without = _lora_rank("ddp", _adapters("lora", dropout=False), checkpointing=False)
    inputs = 5 * 4096 + 4096 + 14336
    assert with_dropout.activations - without.activations == 32 * 2048 * inputs * (2 + 1)
