"""Memory per rank, in bytes, itemized. The only place in the project that knows these sums.

Model states (weights, gradients, optimizer states) follow Rajbhandari et al. 2020, "ZeRO:
Memory Optimizations Toward Training Trillion Parameter Models", section 5: with mixed
precision and Adam a parameter costs 2 bytes of 16-bit weight, 2 bytes of 16-bit gradient and
K = 12 bytes of optimizer state (fp32 master weight, momentum, variance); stage 1 (P_os)
divides the optimizer states by the number of ranks N, stage 2 (P_os+g) the gradients too,
stage 3 (P_os+g+p) the weights too. `zero_paper_terms` is exactly that accounting.

The planner uses what each implementation really keeps (`state_terms`):
- DeepSpeed ZeRO additionally reduces gradients into an fp32 partition for the optimizer
  step, which is what DeepSpeed's own estimators (`estimate_zero2_model_states_mem_needs`,
  `estimate_zero3_...`) count. Stage 3 also keeps its reduce-scattered gradient partition in
  the working precision (`grad_partitions_flat_buffer`) before the fp32 copy: measured on 2
  CPU ranks (docs/benchmarks.md), and missing from DeepSpeed's stage 3 estimator.
- PyTorch DDP and FSDP with mixed precision keep fp32 weights (autocast / FSDP's
  MixedPrecision cast on the fly) with fp32 gradients and Adam's two fp32 states: the same
  16 bytes per parameter, split differently. DDP also keeps a second copy of the gradients
  in its all-reduce buckets (the default `gradient_as_bucket_view=False`).

Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", section 4.1 (34sbh + 5as^2b bytes per layer for GPT), re-derived for
today's decoders: no dropout, RMSNorm computed in fp32, grouped-query attention (k and v are
smaller than q), a gated (SwiGLU) MLP that saves four I-wide tensors, and memory-efficient
attention (SDPA / flash), which never stores the s x s score matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finetune_operator.planner.gpus import GIB
from finetune_operator.planner.parameters import ParameterCount

Item = Literal["weights", "gradients", "optimizer"]

# Plan only what leaves this fraction of the memory free (fragmentation, spikes).
HEADROOM = 0.10
# CUDA context, cuBLAS/NCCL workspaces, the allocator's own reserve, per GPU.
GPU_RUNTIME_OVERHEAD = 2 * GIB
# A CPU rank that imported torch, transformers, trl and deepspeed sits at ~430 MB RSS.
CPU_RUNTIME_OVERHEAD = GIB // 2
# Host RAM of one rank's process besides model states: interpreter, libraries, data loader.
HOST_PROCESS_OVERHEAD = 2 * GIB
# DeepSpeed's estimators multiply host buffers by this (pinned staging, fragmentation).
HOST_BUFFER_FACTOR = 1.5
# ZeRO's K for Adam under mixed precision: fp32 master weights, momentum and variance.
ADAM_MIXED_K = 12

DEEPSPEED = ("zero1", "zero2", "zero3", "zero3-offload")
SHARDS_PARAMETERS = ("zero3", "fsdp", "zero3-offload")


@dataclass(frozen=True)
class StateTerm:
    """Bytes per parameter of one kind of model state, and whether ranks share it."""

    item: Item
    bytes_per_param: int
    sharded: bool  # divided over the N data-parallel ranks
    trainable_only: bool  # only trainable parameters carry it
    what: str


@dataclass(frozen=True)
class Memory:
    """Bytes one rank needs, itemized, plus the host RAM per node."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    host_per_node: int

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.activations
                + self.logits + self.overhead)


def element_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


# --------------------------------------------------------------------------- model states


def zero_paper_terms(stage: int, k: int = ADAM_MIXED_K) -> tuple[StateTerm, ...]:
    """The ZeRO paper's mixed-precision accounting for stage 0 (DDP) to 3."""
    return (
        StateTerm("weights", 2, stage >= 3, False, "16-bit weights"),
        StateTerm("gradients", 2, stage >= 2, True, "16-bit gradients"),
        StateTerm("optimizer", k, stage >= 1, True, "fp32 master weights, momentum, variance"),
    )


def state_terms(strategy: str, precision: str) -> tuple[StateTerm, ...]:
    """What each strategy really keeps per parameter on one rank."""
    e = element_bytes(precision)
    if strategy in DEEPSPEED:
        stage = {"zero1": 1, "zero2": 2}.get(strategy, 3)
        terms = [StateTerm("weights", e, stage >= 3, False, "working weights")]
        if strategy != "zero3-offload":  # offload moves the gradient partition to the host
            terms.append(StateTerm("gradients", e, stage >= 2, True, "working gradients"))
        terms += [
            StateTerm("gradients", 4, True, True, "fp32 gradient partition"),
            # DeepSpeed keeps an fp32 master partition even when training in fp32.
            StateTerm("optimizer", ADAM_MIXED_K, True, True,
                      "fp32 master weights, momentum, variance"),
        ]
        return tuple(terms)
    sharded = strategy == "fsdp"
    terms = [
        StateTerm("weights", 4, sharded, False, "fp32 weights (autocast casts on the fly)"),
        StateTerm("gradients", 4, sharded, True, "fp32 gradients"),
        StateTerm("optimizer", 8, sharded, True, "Adam momentum and variance"),
    ]
    if strategy == "ddp":
        terms.append(StateTerm("gradients", 4, False, True, "DDP all-reduce buckets"))
    return tuple(terms)


def model_states(
    terms: tuple[StateTerm, ...], parameters: int, trainable: int, world: int
) -> dict[Item, int]:
    """Bytes per rank of each item: sharded terms are divided over the `world` ranks."""
    out: dict[Item, int] = {"weights": 0, "gradients": 0, "optimizer": 0}
    for term in terms:
        count = trainable if term.trainable_only else parameters
        size = term.bytes_per_param * count
        out[term.item] += size // world if term.sharded else size
    return out


def gathered_module_bytes(count: ParameterCount, precision: str) -> int:
    """Parameter sharding gathers one module's weights, and its gradients before the
    reduce-scatter: DeepSpeed's `largest_layer_memory` (4 bytes per parameter in 16-bit)."""
    return 2 * element_bytes(precision) * count.largest_module


# --------------------------------------------------------------------------- activations


def norm_bytes_per_token(hidden: int, precision: str) -> int:
    """What an RMSNorm saves besides its output (counted as the next layer's input): its
    input upcast to fp32, and the normalized value before the weight multiplies it."""
    return hidden * (4 + element_bytes(precision))


def layer_activation_bytes(
    count: ParameterCount, tokens: int, seq_len: int, precision: str,
    memory_efficient_attention: bool = True,
) -> int:
    """Activations one transformer block saves for backward, for `tokens` tokens."""
    s = count.shape
    e = element_bytes(precision)
    q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    # Inputs of the q/k/v projections, q, k and v for attention, its output (o_proj input).
    attention = s.hidden_size + q + 2 * kv + q
    # MLP input, then gate, act(gate), up and their product (input of down_proj); a plain
    # MLP saves fc output and act(fc). Mixture of experts: per token, its active experts.
    width = (4 if s.gated_mlp else 2) * s.intermediate_size * s.experts_per_token
    mlp = s.hidden_size + width
    per_token = e * (attention + mlp) + 2 * norm_bytes_per_token(s.hidden_size, precision)
    quadratic = 0
    if not memory_efficient_attention:
        # Eager attention keeps the fp32 softmax and its cast copy: heads x seq per token.
        quadratic = s.num_heads * seq_len * (4 + e)
    return tokens * (per_token + quadratic)


def activation_bytes(
    count: ParameterCount, *, micro_batch: int, seq_len: int, precision: str,
    checkpointing: bool, layers_with_grad: int, memory_efficient_attention: bool = True,
) -> int:
    """Saved activations of one micro-batch on one rank.

    Only blocks that need gradients (all of them, or the top ones under `freeze`) save
    anything. Full checkpointing keeps each block's input and recomputes one block at a time.
    """
    tokens = micro_batch * seq_len
    e = element_bytes(precision)
    layers = min(layers_with_grad, count.shape.num_layers)
    block = layer_activation_bytes(count, tokens, seq_len, precision, memory_efficient_attention)
    if checkpointing:
        saved = layers * tokens * count.shape.hidden_size * e + (block if layers else 0)
    else:
        saved = layers * block
    # The final norm and its output, the hidden state that feeds the head.
    h = count.shape.hidden_size
    return saved + tokens * (norm_bytes_per_token(h, precision) + e * h)


def logits_bytes(
    count: ParameterCount, *, micro_batch: int, seq_len: int, precision: str,
    num_labels: int | None = None,
) -> int:
    """seq x batch x vocab three times: the head's output (kept in the model's outputs), the
    fp32 log-softmax the loss saves, and the fp32 gradient of the logits."""
    e = element_bytes(precision)
    per_entry = e + 4 + 4
    if num_labels:  # classification: one row of logits per sequence
        return micro_batch * num_labels * per_entry
    return micro_batch * seq_len * count.shape.vocab_size * per_entry


# --------------------------------------------------------------------------- per rank


def rank_memory(
    count: ParameterCount, *, trainable: int, strategy: str, precision: str, world: int,
    gpus_per_node: int, micro_batch: int, seq_len: int, checkpointing: bool,
    layers_with_grad: int, on_cpu: bool, num_labels: int | None = None,
) -> Memory:
    """Everything one rank holds for `strategy`, and the host RAM one node needs."""
    terms = state_terms(strategy, precision)
    states = model_states(terms, count.total, trainable, world)
    runtime = CPU_RUNTIME_OVERHEAD if on_cpu else GPU_RUNTIME_OVERHEAD
    gathered = gathered_module_bytes(count, precision) if strategy in SHARDS_PARAMETERS else 0
    offloaded = 0
    if strategy == "zero3-offload":
        # Weights, gradient partitions and optimizer states all live in host memory.
        offloaded = sum(states.values())
        states = {"weights": 0, "gradients": 0, "optimizer": 0}
    memory = Memory(
        weights=states["weights"],
        gradients=states["gradients"],
        optimizer=states["optimizer"],
        activations=activation_bytes(count, micro_batch=micro_batch, seq_len=seq_len,
                                     precision=precision, checkpointing=checkpointing,
                                     layers_with_grad=layers_with_grad),
        logits=logits_bytes(count, micro_batch=micro_batch, seq_len=seq_len,
                            precision=precision, num_labels=num_labels),
        overhead=runtime + gathered,
        host_per_node=0,
    )
    host = host_bytes_per_node(count, strategy=strategy,
                               gpus_per_node=gpus_per_node, offloaded_per_rank=offloaded,
                               rank_total=memory.total, on_cpu=on_cpu)
    return Memory(memory.weights, memory.gradients, memory.optimizer, memory.activations,
                  memory.logits, memory.overhead, host)


def host_bytes_per_node(
    count: ParameterCount, *, strategy: str, gpus_per_node: int,
    offloaded_per_rank: int, rank_total: int, on_cpu: bool,
) -> int:
    """Host RAM one node (pod) needs.

    On cpu every rank's memory is host memory. On GPUs: offloaded states with DeepSpeed's
    buffer factor; otherwise the fp32 copy each rank materializes while loading the
    checkpoint (only the largest module at a time under ZeRO-3's zero.Init), as DeepSpeed's
    estimators count it. Plus each rank's process.
    """
    process = gpus_per_node * HOST_PROCESS_OVERHEAD
    if on_cpu:
        return gpus_per_node * rank_total
    if strategy == "zero3-offload":
        return int(gpus_per_node * offloaded_per_rank * HOST_BUFFER_FACTOR) + process
    loaded = count.largest_module if strategy == "zero3" else count.total
    return int(4 * loaded * gpus_per_node * HOST_BUFFER_FACTOR) + process


def usable(memory: int) -> int:
    """What a plan may use of a GPU's memory: all but the headroom."""
    return int(memory * (1 - HEADROOM))
