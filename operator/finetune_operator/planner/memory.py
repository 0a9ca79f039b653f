"""Memory per rank, in bytes, itemized. The only place in the project that knows these sums.

Model states (weights, gradients, optimizer states) follow Rajbhandari et al. 2020, "ZeRO:
Memory Optimizations Toward Training Trillion Parameter Models", section 5: with mixed
precision and Adam a parameter costs 2 bytes of 16-bit weight, 2 bytes of 16-bit gradient and
K = 12 bytes of optimizer state (fp32 master weight, momentum, variance); stage 1 (P_os)
divides the optimizer states by the number of ranks N, stage 2 (P_os+g) the gradients too,
stage 3 (P_os+g+p) the weights too.

The planner uses what each implementation really keeps (`state_terms`), which is the paper's
accounting plus what is noted here (the tests check it against the paper's worked example):
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
what transformers' Llama-style decoders really save under the trainer (no dropout, RMSNorm
upcast to fp32, grouped-query attention, a gated SwiGLU MLP, SDPA attention, TRL's fused LM
head) and checked against the bytes autograd saves on tiny models
(tests/finetune_operator/planner/test_memory_measured.py).

The total is a peak, not a sum: the items (weights, gradients, optimizer, activations, logits,
overhead) are never all live at once. Adam's states are created at the first optimizer step,
after the activations are freed; the activations of the next step are saved while Adam's
states exist but (with one micro-batch per step) before any gradient does. `rank_memory`
takes the larger of two phases, forward/backward and the optimizer step (`phase_peaks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from finetune_contract.strategies import ZERO3_MAX_REUSE_DISTANCE
from finetune_contract.strategies import strategy as strategy_row

from finetune_operator.planner.gpus import GIB, MIB
from finetune_operator.planner.parameters import ParameterCount

Item = Literal["weights", "gradients", "optimizer"]
# When a state is live: always (from setup or the first step on), from backward through the
# optimizer step (gradients the step consumes, freed by zero_grad), or during the step only.
Lifetime = Literal["persistent", "gradient", "step"]
Attention = Literal["varlen", "masked", "eager"]

# Plan only what leaves this fraction of the memory free (fragmentation, spikes).
HEADROOM = 0.10
# CUDA context, cuBLAS/NCCL workspaces, the allocator's own reserve, per GPU.
GPU_RUNTIME_OVERHEAD = 2 * GIB
# A CPU rank that imported torch, transformers, trl and deepspeed sits at ~450 MiB RSS.
CPU_RUNTIME_OVERHEAD = GIB // 2
# What a CPU rank's process gains beyond its tensors once training starts, over the imports
# (the runtime term): trainer and data pipeline objects, the gloo process group, glibc arenas;
# DeepSpeed's engine about as much again. Measured as RSS growth minus the bytes of every live
# tensor at the start of training (bench section 2, "non-tensor" column): 49-50 MiB under DDP,
# 98-103 MiB under DeepSpeed, alike for 20M and 50M parameters. On a GPU this is host memory.
CPU_PROCESS_OVERHEAD = {"ddp": 50 * MIB, "deepspeed": 100 * MIB}
# Host RAM of one rank's process besides model states: interpreter, libraries, data loader.
HOST_PROCESS_OVERHEAD = 2 * GIB
# DeepSpeed's estimators multiply host buffers by this (pinned staging, fragmentation).
HOST_BUFFER_FACTOR = 1.5
# ZeRO's K for Adam under mixed precision: fp32 master weights, momentum and variance.
ADAM_MIXED_K = 12

# ZeRO-3 parameter retention (finetune_contract/strategies.py: ZERO3_MAX_REUSE_DISTANCE, which
# the trainer writes into its DeepSpeed config). Between a block's forward and its backward lie
# about twice the parameters after it, so the last ~max_reuse_distance / 2 parameters stay
# gathered from their forward to their backward: a 20M model keeps all of them, an 8B one its
# LM head.

# TRL's fused LM head (trl/kernels/chunked_logprob.py) projects TOKEN_CHUNK x VOCAB_CHUNK
# tiles through the head instead of materializing batch x seq x vocab logits.
HEAD_TOKEN_CHUNK = 4096
HEAD_VOCAB_CHUNK = 32768
# On a CPU (no Triton) the backward folds each tile with torch ops (`_backward_tile`): the
# scaled tile, z, log p, p, the gradient, the target indicator as float and its difference
# with p are 7 fp32 tiles live at once (the torch profiler on the bench's ranks agrees).
HEAD_CPU_TILE_TEMPORARIES = 7

# DDP with gradient_as_bucket_view (finetune_trainer/trainer.py): each .grad is a view into
# DDP's all-reduce buckets, allocated once, so the gradients cost one fp32 copy, kept between
# steps. Without it, .grad is a second copy, freed by zero_grad after every step.
DDP_GRADIENT_AS_BUCKET_VIEW = True



# bitsandbytes' 4-bit weights (qlora): two weights a byte, plus one scale (absmax) per block
# of 64 weights, fp32 without double quantization; with it the scales are stored in 8 bits,
# with one fp32 scale of theirs per 256 blocks (Dettmers et al. 2023, "QLoRA", section 3).
QUANT_BLOCK = 64
QUANT_SCALE_BLOCK = 256


@dataclass(frozen=True)
class Adapters:
    """What tuning: lora or qlora changes in the sums: a frozen base without gradients or
    optimizer states, and small adapters that carry both.

    `adapter_bytes`: bytes of one adapter weight: 4 under lora (peft keeps adapters in fp32
    on a 16-bit base) or in the working precision under DeepSpeed (which casts the model), 2
    under qlora (TRL casts the adapters of a quantized model to bf16, and AdamW's states
    follow). `quantized`: base parameters stored in 4 bits (qlora; 0 under lora).
    `inputs_per_token`: input features of the adapted layers of one block (their dropout
    saves a copy and a mask each); `adapted`: adapted layers per block (each saves its
    rank-r intermediate)."""

    tuning: str
    trainable: int
    rank: int
    dropout: bool
    adapted: int
    inputs_per_token: int
    largest_linear: int
    quantized: int = 0
    double_quant: bool = True
    trainable_head: bool = False

    def adapter_bytes(self, strategy: str, precision: str) -> int:
        if self.tuning == "qlora":
            return 2
        return element_bytes(precision) if is_deepspeed(strategy) else 4


def quantized_bytes(parameters: int, double_quant: bool) -> int:
    """Bytes of `parameters` weights in bitsandbytes' 4-bit format, scales included."""
    blocks = parameters / QUANT_BLOCK
    scales = blocks * (1 + 4 / QUANT_SCALE_BLOCK) if double_quant else blocks * 4
    return int(parameters / 2 + scales)


def frozen_base_bytes(count: ParameterCount, adapters: Adapters, precision: str) -> int:
    """The frozen base of lora or qlora on one unsharded rank: the working precision (the
    trainer loads it so; no fp32 master is needed without gradients), 4 bits for the
    quantized linear layers under qlora."""
    plain = count.total - adapters.quantized
    return (element_bytes(precision) * plain
            + quantized_bytes(adapters.quantized, adapters.double_quant))


def adapter_state_terms(strategy: str, precision: str, tuning: str
                        ) -> tuple[StateTerm, ...]:
    """The states of the adapters (the only trainable parameters) of `tuning` (lora or
    qlora): those of `strategy` for a model of the adapters alone; under qlora bf16 weights,
    gradients and AdamW states."""
    if tuning != "qlora":
        return state_terms(strategy, precision)
    return (StateTerm("weights", 2, False, False, "bf16 adapters"),
            StateTerm("optimizer", 4, False, True, "Adam momentum and variance in bf16"),
            StateTerm("gradients", 2, False, True,
                      "bf16 gradients, views into DDP's all-reduce buckets"))


def adapter_activation_bytes_per_token(adapters: Adapters, strategy: str,
                                       precision: str) -> int:
    """What the adapters add to one block's saved activations, per token: each adapted
    layer's dropout keeps its output (the adapter's input) and a one-byte mask, and each
    adapter saves its rank-r intermediate for B's gradient. Without dropout the adapter
    reads the very input the block already saves."""
    a = adapters.adapter_bytes(strategy, precision)
    c = element_bytes(precision)
    dropout = adapters.inputs_per_token * (c + 1) if adapters.dropout else 0
    return dropout + adapters.adapted * adapters.rank * a


def is_deepspeed(strategy: str) -> bool:
    return strategy_row(strategy).deepspeed


def zero_bucket_elements(hidden_size: int) -> dict[str, int]:
    """The ZeRO sizes the trainer's DeepSpeed config leaves on "auto", as transformers fills
    them from the model (integrations/deepspeed.py): reduce bucket h^2, stage 3 prefetch bucket
    0.9 h^2, parameters of at most 10 h elements stay gathered (persistent)."""
    return {"reduce_bucket_size": hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": 10 * hidden_size}


@dataclass(frozen=True)
class StateTerm:
    """Bytes per parameter of one kind of model state, and whether ranks share it."""

    item: Item
    bytes_per_param: int
    sharded: bool  # divided over the N data-parallel ranks
    trainable_only: bool  # only trainable parameters carry it
    what: str
    lifetime: Lifetime = "persistent"


@dataclass(frozen=True)
class Memory:
    """Bytes one rank needs, itemized, plus the host RAM per node.

    The items say what the rank holds at some point of a step; `total` is the peak, the
    larger of the forward/backward and optimizer-step phases, which is less than their sum
    (`phase_peaks`). Without a peak given, the total is the sum of the items. A calibrated
    peak (`calibrated`) keeps the planner's own in `uncalibrated`; the items stay as
    estimated."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    host_per_node: int
    peak: int | None = None
    uncalibrated: int | None = None  # the peak before the calibration factor, when one applied

    @property
    def total(self) -> int:
        if self.peak is not None:
            return self.peak
        return (self.weights + self.gradients + self.optimizer + self.activations
                + self.logits + self.overhead)

    @property
    def estimate(self) -> int:
        """The planner's own peak, before any calibration."""
        return self.total if self.uncalibrated is None else self.uncalibrated


def element_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


# --------------------------------------------------------------------------- model states


def state_terms(strategy: str, precision: str) -> tuple[StateTerm, ...]:
    """What each strategy really keeps per parameter on one rank, and when."""
    e = element_bytes(precision)
    row = strategy_row(strategy)
    if row.zero_stage is not None:
        stage = row.zero_stage
        terms = [StateTerm("weights", e, stage >= 3, False, "working weights")]
        if not row.offload:  # offload moves the gradient partition to the host
            # Stage 1 accumulates whole gradients until the step; stages 2 and 3 reduce each
            # bucket into a partition buffer that stays allocated between steps
            # (grads_in_partition, grad_partitions_flat_buffer).
            terms.append(StateTerm("gradients", e, stage >= 2, True, "working gradients",
                                   "gradient" if stage == 1 else "persistent"))
        terms += [
            # The optimizer step flattens the partition and casts it to fp32; freed after it.
            StateTerm("gradients", 4, True, True, "fp32 gradient partition", "step"),
            # DeepSpeed keeps an fp32 master partition even when training in fp32.
            StateTerm("optimizer", ADAM_MIXED_K, True, True,
                      "fp32 master weights, momentum, variance"),
        ]
        return tuple(terms)
    sharded = row.sharded
    terms = [
        StateTerm("weights", 4, sharded, False, "fp32 weights (autocast casts on the fly)"),
        StateTerm("optimizer", 8, sharded, True, "Adam momentum and variance"),
    ]
    if strategy == "ddp" and DDP_GRADIENT_AS_BUCKET_VIEW:
        terms.append(StateTerm("gradients", 4, False, True,
                               "fp32 gradients, views into DDP's all-reduce buckets"))
    else:
        # zero_grad(set_to_none) frees them after every step.
        terms.append(StateTerm("gradients", 4, sharded, True, "fp32 gradients", "gradient"))
    if strategy == "ddp" and not DDP_GRADIENT_AS_BUCKET_VIEW:
        terms.append(StateTerm("gradients", 4, False, True, "DDP all-reduce buckets"))
    return tuple(terms)


def model_states(
    terms: tuple[StateTerm, ...], parameters: int, trainable: int, world: int,
    lifetime: Lifetime | None = None,
) -> dict[Item, int]:
    """Bytes per rank of each item (only terms of `lifetime` when given): sharded terms are
    divided over the `world` ranks."""
    out: dict[Item, int] = {"weights": 0, "gradients": 0, "optimizer": 0}
    for term in terms:
        if lifetime is not None and term.lifetime != lifetime:
            continue
        count = trainable if term.trainable_only else parameters
        size = term.bytes_per_param * count
        out[term.item] += size // world if term.sharded else size
    return out


def gathered_module_bytes(count: ParameterCount, precision: str) -> int:
    """Parameter sharding gathers one module's weights, and its gradients before the
    reduce-scatter: DeepSpeed's `largest_layer_memory` (4 bytes per parameter in 16-bit)."""
    return 2 * element_bytes(precision) * count.largest_module


def zero3_retained_elements(count: ParameterCount) -> int:
    """Parameter elements ZeRO-3 keeps gathered from their forward to their backward.

    DeepSpeed releases a module's parameters after its forward unless the recorded module
    trace uses them again within ZERO3_MAX_REUSE_DISTANCE elements; the reuse distance of a
    module is the parameters of every module after it, once in the forward and once in the
    backward. Counted from the head backwards: the head, the final norm, the blocks (one
    run of equal modules, counted at once: the cost must not grow with the layer count),
    and an untied embedding (used first in the forward, last in the backward)."""
    runs = [(count.head or count.embedding, 1), (count.final_norm, 1),
            (count.per_layer, count.shape.num_layers)]
    if count.head:
        runs.append((count.embedding, 1))
    retained = 0  # also the parameters after the next module
    for size, copies in runs:
        kept = _modules_kept(retained, size, copies)
        retained += kept * size
        if kept < copies:
            break
    return min(retained, count.total)


def _modules_kept(after: int, size: int, copies: int) -> int:
    """How many of `copies` modules of `size` elements in a row stay gathered, with `after`
    elements after the first: module i stays while 2 * (after + i * size) is below the
    reuse distance, so i < (distance - 2 * after) / (2 * size)."""
    room = ZERO3_MAX_REUSE_DISTANCE - 2 * after
    if room <= 0:
        return 0
    if size <= 0:
        return copies
    return min(copies, -(-room // (2 * size)))


def zero_working_bytes(count: ParameterCount, strategy: str, precision: str,
                       on_cpu: bool) -> int:
    """What DeepSpeed allocates beyond the partitioned states at the forward/backward peak.

    - The reduce bucket (`reduce_bucket_size` elements of the working precision). Stages 1-2
      allocate a second one with overlap_comm, which the trainer turns on with CUDA
      (`setup_buckets`); stage 3 one per dtype whatever overlap_comm says.
    - Stage 3: the parameters kept gathered between forward and backward
      (`zero3_retained_elements`), the prefetch bucket, and one module's full gradient before
      its reduce-scatter.
    """
    stage = strategy_row(strategy).zero_stage
    if stage is None:
        return 0
    e = element_bytes(precision)
    sizes = zero_bucket_elements(count.shape.hidden_size)
    if stage < 3:
        return (1 if on_cpu else 2) * sizes["reduce_bucket_size"] * e
    buckets = sizes["reduce_bucket_size"] * e
    gathered = zero3_retained_elements(count) + sizes["stage3_prefetch_bucket_size"]
    return buckets + e * (gathered + count.largest_module)


# --------------------------------------------------------------------------- activations


@dataclass(frozen=True)
class Compute:
    """Element sizes of what a forward pass saves.

    `compute`: the matmul and attention inputs (2 bytes in bf16/fp16, 4 in fp32).
    `residual`: the residual stream, the norms' outputs and the final hidden state: the model's
    own dtype, so fp32 under autocast (DDP keeps fp32 weights and autocast casts per op).
    `autocast`: each projection casts its input itself (q, k, v: three copies of the norm
    output; gate, up: two) and the 16-bit copy of every weight is saved for the backward."""

    compute: int
    residual: int
    autocast: bool


def compute_of(strategy: str, precision: str) -> Compute:
    """DDP trains the fp32 model under autocast; DeepSpeed casts the model to 16 bits and
    FSDP gathers 16-bit parameters (MixedPrecisionPolicy), so both compute in one dtype."""
    e = element_bytes(precision)
    autocast = e != 4 and strategy == "ddp"
    return Compute(compute=e, residual=4 if autocast else e, autocast=autocast)


def attention_kind(on_cpu: bool, packing: str) -> Attention:
    """How the trainer's attention runs (finetune_trainer/attention.py): on a CPU,
    padding-free and packed micro-batches are split into their rows and each row runs causal
    SDPA (`varlen`); everywhere else SDPA gets the block-diagonal or padding mask transformers
    builds (`masked`). The trainer image ships no flash-attn."""
    if on_cpu and packing in ("padding-free", "packed"):
        return "varlen"
    return "masked"


def mask_elements(micro_batch: int, seq_len: int, packing: str) -> int:
    """Elements of the attention mask SDPA receives: padding-free and packed micro-batches
    are one row of micro x seq tokens, padded ones micro rows of seq."""
    if packing in ("padding-free", "packed"):
        return (micro_batch * seq_len) ** 2
    return micro_batch * seq_len * seq_len


def norm_bytes_per_token(hidden: int, residual: int = 4) -> int:
    """What an RMSNorm saves besides its output (counted as the next layer's input): its
    input upcast to fp32, 1/rms (fp32) and the normalized value in the residual dtype."""
    return hidden * (4 + residual) + 4


def layer_activation_bytes(
    count: ParameterCount, tokens: int, *, compute: Compute, attention: Attention = "varlen",
    mask: int = 0, seq_len: int = 0,
) -> int:
    """Bytes one transformer block saves for backward, for `tokens` tokens.

    Per token: two norms; the q/k/v input (three autocast copies) and the MLP input (two);
    q and k after the rotary embedding, v, the attention output and its fp32 log-sum-exp per
    head; gate, act(gate), up and their product (input of down_proj). `varlen` keeps k and v
    with the key/value heads and the attention output twice (each row's output, and their
    concatenation); `masked` SDPA gets k and v repeated to every query head, plus the mask
    converted to the compute dtype on every call (`mask` elements per micro-batch); `eager`
    keeps the softmax (fp32 and cast) instead. Under autocast, the block's 16-bit weights.
    """
    s = count.shape
    c, r = compute.compute, compute.residual
    h = s.hidden_size
    q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    inputs = (3 + 2 if compute.autocast else 2) * c * h
    norms = 2 * norm_bytes_per_token(h, r)
    lse = 4 * s.num_heads
    if attention == "varlen":
        attn = c * (q + 2 * kv + 2 * q) + lse
    elif attention == "masked":
        attn = c * (q + 2 * q + q) + lse
    else:  # eager: q, repeated k and v, output, and the softmax before and after its cast
        attn = c * (4 * q) + s.num_heads * seq_len * (4 + c)
    # Gated MLP: gate, act(gate), up, product; a plain MLP: fc and act(fc). Mixture of
    # experts: per token, its active experts.
    mlp = (4 if s.gated_mlp else 2) * s.intermediate_size * s.experts_per_token * c
    per_block = 0
    if attention == "masked":
        per_block += mask * c
    if compute.autocast:
        per_block += 2 * (count.per_layer_active or count.per_layer)
    return tokens * (norms + inputs + attn + mlp) + per_block


def activation_bytes(
    count: ParameterCount, *, micro_batch: int, seq_len: int, precision: str,
    checkpointing: bool, layers_with_grad: int, strategy: str = "zero2",
    attention: Attention = "varlen", packing: str = "padding-free",
    compute: Compute | None = None, extra_per_token: int = 0,
) -> int:
    """Saved activations of one micro-batch on one rank.

    `compute` overrides the strategy's element sizes (a 16-bit frozen base computes in its
    own dtype under any strategy); `extra_per_token` is what each block saves besides
    (the adapters' own activations).

    Only blocks that need gradients (all of them, or the top ones under `freeze`) save
    anything. Full checkpointing keeps each block's input (residual dtype) and recomputes one
    block at a time. Outside the blocks: the token ids, the rotary cos/sin tables (recomputed
    inside checkpointed blocks), the final norm and the hidden state the LM head reads.
    """
    tokens = micro_batch * seq_len
    cp = compute if compute is not None else compute_of(strategy, precision)
    s = count.shape
    layers = min(layers_with_grad, s.num_layers)
    block = layer_activation_bytes(count, tokens, compute=cp, attention=attention,
                                   mask=mask_elements(micro_batch, seq_len, packing),
                                   seq_len=seq_len) + tokens * extra_per_token
    if checkpointing:
        saved = layers * tokens * s.hidden_size * cp.residual + (block if layers else 0)
    else:
        saved = layers * block
    rotary = 0 if checkpointing or not layers else 2 * s.head_dim * cp.residual
    h = s.hidden_size
    outside = 8 + rotary + norm_bytes_per_token(h, cp.residual) + cp.residual * h
    return saved + tokens * outside


def logits_bytes(
    count: ParameterCount, *, micro_batch: int, seq_len: int, precision: str,
    num_labels: int | None = None, on_cpu: bool = False, trainable_head: bool = True,
) -> int:
    """The LM head's working set for one micro-batch, at its peak (the head's backward).

    TRL's SFTTrainer computes the loss with a fused head that never materializes the
    seq x vocab logits: it keeps per token the label, log Z and the entropy, and projects
    tiles of HEAD_TOKEN_CHUNK tokens x HEAD_VOCAB_CHUNK vocabulary entries through a reused
    buffer (allocated whole on a GPU; on a CPU only the columns a smaller vocabulary touches
    become resident, and the torch fallback keeps a few fp32 tiles besides). Its backward
    accumulates the hidden-state gradient and the head's weight gradient in fp32, then casts
    the weight gradient to the working precision. Classification keeps batch x labels logits.
    """
    e = element_bytes(precision)
    if num_labels:  # classification: one row of logits per sequence, fp32 loss and gradient
        return micro_batch * num_labels * (e + 4 + 4)
    s = count.shape
    tokens = micro_batch * seq_len
    rows = min(tokens, HEAD_TOKEN_CHUNK)
    width = min(s.vocab_size, HEAD_VOCAB_CHUNK) if on_cpu else HEAD_VOCAB_CHUNK
    tiles = rows * width * (e + (4 * HEAD_CPU_TILE_TEMPORARIES if on_cpu else 0))
    per_token = 8 + 4 + 4 + 1 + 4 * s.hidden_size  # label, log Z, entropy, mask, fp32 grad
    head = s.vocab_size * s.hidden_size
    weight_grad = head * (4 + (e if e != 4 else 0)) if trainable_head else 0
    return tiles + tokens * per_token + weight_grad


# --------------------------------------------------------------------------- per rank


@dataclass(frozen=True)
class Phases:
    """Peak bytes of one rank in each phase of a training step (beyond the runtime)."""

    backward: int  # forward and backward of a micro-batch
    step: int  # the optimizer step


def phase_peaks(
    terms: tuple[StateTerm, ...], *, parameters: int, trainable: int, world: int,
    precision: str, activations: int, logits: int, working: int, accumulation: int,
    frozen: int = 0,
) -> Phases:
    """The two phases of a steady-state step (Adam's states exist from the first step on).

    Forward/backward: the persistent states, the working set (ZeRO buckets and gathered
    parameters), and either the saved activations with the head's working set (the start of
    the backward) or the gradients built by its end, whichever is larger; with gradient
    accumulation the gradients of earlier micro-batches are live during the forward too.
    Optimizer step: the persistent states, the gradients and the step-only fp32 gradient
    partition (DeepSpeed), plus the flattened 16-bit copy cast from it.
    """
    persistent = frozen + sum(
        model_states(terms, parameters, trainable, world, "persistent").values())
    gradients = sum(model_states(terms, parameters, trainable, world, "gradient").values())
    step_only = sum(model_states(terms, parameters, trainable, world, "step").values())
    if accumulation > 1:
        backward = persistent + working + gradients + activations + logits
    else:
        backward = persistent + working + max(activations + logits, gradients)
    e = element_bytes(precision)
    flat_copy = step_only * e // 4 if step_only and e != 4 else 0
    step = persistent + gradients + step_only + flat_copy
    return Phases(backward=backward, step=step)


def rank_memory(
    count: ParameterCount, *, trainable: int, strategy: str, precision: str, world: int,
    gpus_per_node: int, micro_batch: int, seq_len: int, checkpointing: bool,
    layers_with_grad: int, on_cpu: bool, num_labels: int | None = None,
    packing: str = "padding-free", accumulation: int = 1, adapters: Adapters | None = None,
    calibration: float = 1.0,
) -> Memory:
    """Everything one rank holds for `strategy`, its peak, and the host RAM one node needs.

    With `adapters` (tuning lora or qlora) the model states are the adapters' (as if they
    were the whole model) plus the frozen base, in its own bytes per parameter and sharded
    only by ZeRO-3 and FSDP; the activations are those of the 16-bit (or fp32) base plus the
    adapters' own; the LM head gets no weight gradient unless it is trained in full.
    `calibration`: what measured runs of this model family, strategy and GPU peaked at over
    their estimate (finetune_operator/calibration.py): the peak is scaled by it
    (`calibrated`), and so is the host RAM of CPU ranks."""
    frozen = 0
    if adapters is not None:
        terms = adapter_state_terms(strategy, precision, adapters.tuning)
        parameters = trainable = adapters.trainable
        frozen = frozen_base_bytes(count, adapters, precision)
        if strategy_row(strategy).sharded and strategy_row(strategy).zero_stage in (None, 3):
            frozen //= world  # ZeRO-3 and FSDP shard every weight, frozen or not
    else:
        terms = state_terms(strategy, precision)
        parameters = count.total
    states = model_states(terms, parameters, trainable, world)
    states["weights"] += frozen
    runtime = GPU_RUNTIME_OVERHEAD
    if on_cpu:
        runtime = CPU_RUNTIME_OVERHEAD + CPU_PROCESS_OVERHEAD[
            "deepspeed" if is_deepspeed(strategy) else "ddp"]
    if is_deepspeed(strategy):
        working = zero_working_bytes(count, strategy, precision, on_cpu)
    elif strategy == "fsdp":
        # FSDP2, one unit per block: the root unit (embedding, final norm, head) stays
        # gathered from its forward to its backward; the block being computed, the next one
        # prefetched, and one block's unsharded gradients before its reduce-scatter.
        root = count.embedding + count.final_norm + count.head
        working = element_bytes(precision) * (root + 3 * count.per_layer)
    else:
        working = 0
    compute, extra = None, 0
    if adapters is not None:
        e = element_bytes(precision)
        compute = Compute(compute=e, residual=e, autocast=False)  # the base is in e bytes
        extra = adapter_activation_bytes_per_token(adapters, strategy, precision)
        if adapters.quantized:  # one layer's weight dequantized at a time, for its matmul
            working += 2 * adapters.largest_linear
    activations = activation_bytes(
        count, micro_batch=micro_batch, seq_len=seq_len, precision=precision,
        checkpointing=checkpointing, layers_with_grad=layers_with_grad, strategy=strategy,
        attention=attention_kind(on_cpu, packing), packing=packing, compute=compute,
        extra_per_token=extra)
    logits = logits_bytes(count, micro_batch=micro_batch, seq_len=seq_len,
                          precision=precision, num_labels=num_labels, on_cpu=on_cpu,
                          trainable_head=(adapters.trainable_head if adapters is not None
                                          else trainable > 0))
    offloaded = 0
    if strategy_row(strategy).offload:
        # Weights, gradient partitions and optimizer states all live in host memory.
        offloaded = sum(states.values())
        states = {"weights": 0, "gradients": 0, "optimizer": 0}
        phases = Phases(backward=working + activations + logits, step=0)
    else:
        phases = phase_peaks(terms, parameters=parameters, trainable=trainable, world=world,
                             precision=precision, activations=activations, logits=logits,
                             working=working, accumulation=accumulation,
                             frozen=frozen)
    peak = runtime + max(phases.backward, phases.step)
    memory = Memory(
        weights=states["weights"],
        gradients=states["gradients"],
        optimizer=states["optimizer"],
        activations=activations,
        logits=logits,
        overhead=runtime + working,
        host_per_node=0,
        peak=calibrated(peak, calibration),
        uncalibrated=None if calibration == 1.0 else peak,
    )
    host = host_bytes_per_node(count, strategy=strategy,
                               gpus_per_node=gpus_per_node, offloaded_per_rank=offloaded,
                               rank_total=memory.total, on_cpu=on_cpu,
                               load_bytes=element_bytes(precision) if adapters else 4)
    return replace(memory, host_per_node=host)


def calibrated(peak: int, factor: float) -> int:
    """The peak a measured factor makes of the estimate, rounded up.

    The whole peak is scaled, not only its estimated items (activations, logits, working
    buffers) above the exact model states: the ratio a run measures is of the whole peak,
    and which items make up a peak depends on the phase that sets it (the backward or the
    optimizer step) and on the micro-batch, which differ from one job of a key to the next.
    A share of the error can only be put on an item by assuming where it came from."""
    return peak if factor == 1.0 else math.ceil(peak * factor)


def host_bytes_per_node(
    count: ParameterCount, *, strategy: str, gpus_per_node: int,
    offloaded_per_rank: int, rank_total: int, on_cpu: bool, load_bytes: int = 4,
) -> int:
    """Host RAM one node (pod) needs.

    On cpu every rank's memory is host memory. On GPUs: offloaded states with DeepSpeed's
    buffer factor; otherwise the copy each rank materializes while loading the (fp32, or
    `load_bytes` per parameter: a frozen lora base loads in its working precision)
    checkpoint (only the largest module at a time under ZeRO-3's zero.Init), as DeepSpeed's
    estimators count it. Plus each rank's process.
    """
    process = gpus_per_node * HOST_PROCESS_OVERHEAD
    if on_cpu:
        return gpus_per_node * rank_total
    row = strategy_row(strategy)
    if row.offload:
        return int(gpus_per_node * offloaded_per_rank * HOST_BUFFER_FACTOR) + process
    # zero.Init loads one module at a time under ZeRO-3
    loaded = count.largest_module if row.zero_stage == 3 else count.total
    return int(load_bytes * loaded * gpus_per_node * HOST_BUFFER_FACTOR) + process


# CPUs per GPU rank when the optimizer steps on the host (zero3-offload). DeepSpeed's CPU Adam
# updates the rank's fp32 partition on the host every step with OpenMP threads, reading and
# writing about 30 bytes per parameter (fp32 weight, gradient, momentum and variance, and the
# 16-bit copy back): it is bound by memory bandwidth, which one core is far from saturating.
# 8 vCPUs (4 cores with SMT) per rank, 64 for 8 GPUs, stays below every 8-GPU shape of the
# catalog (96 vCPUs on p4d.24xlarge and a2-*-8g, the fewest) with room for the data loader
# and the node's daemons; a smaller node is told with resources.cpu.
CPU_ADAM_CPUS_PER_RANK = 8


def cpus_per_node(strategy: str, gpus_per_node: int, on_cpu: bool) -> int:
    """CPU cores one pod (node) needs: one per CPU rank (each runs one thread), the CPU Adam
    cores per GPU rank under offloading; 0 otherwise, where GPU ranks need little more than
    the data loader and the scheduler's defaults do."""
    if on_cpu:
        return gpus_per_node
    if strategy_row(strategy).offload:
        return CPU_ADAM_CPUS_PER_RANK * gpus_per_node
    return 0


def usable(memory: int) -> int:
    """What a plan may use of a GPU's memory: all but the headroom."""
    return int(memory * (1 - HEADROOM))
