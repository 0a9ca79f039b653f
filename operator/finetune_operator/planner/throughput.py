"""Predicted seconds per optimizer step and tokens per second of one layout.

    step = compute + communication + offload    (no overlap assumed: OVERLAP = 0)

Compute: the model FLOPs of `estimate.training_flops` (6 x N per token for full
fine-tuning) plus the attention score FLOPs that 6 x N leaves out, at the MFU of
`estimate.utilization`.
Attention follows PaLM's accounting (Chowdhery et al. 2022, appendix B: 6N + 12 L H Q T FLOPs
per token, H Q the hidden size, T the sequence length) and Megatron's (Narayanan et al. 2021,
section 5.1): QK^T and AV cost 2 x seq x hidden each per token and layer in the forward pass,
4 x seq x hidden, and twice as much again in the backward: 12 x seq x hidden per layer. The
causal mask's saving is not counted (PaLM does not either): kernels skip less than half.

Communication per optimizer step, with f = (W - 1) / W over W ranks, P the bytes of the
working-precision weights and G the bytes of the gradients the strategy reduces (ring
collectives: an all-reduce moves 2 f S per rank, a reduce-scatter or all-gather f S; Patarasuk
and Yuan 2009, and nccl-tests' bus bandwidth, which the catalog's figures are):
- ddp:   2 f G once per step (accelerate skips the all-reduce on accumulation micro-batches);
- zero1: f G (reduce-scatter at the step) + f P (all-gather of the updated weights);
- zero2: f G per micro-batch (stage 2 reduces every backward into the partition) + f P;
- zero3, fsdp, zero3-offload: (2 f P + f G) per micro-batch: the weights gathered for the
  forward and again for the backward, the gradients reduce-scattered (Rajbhandari et al.
  2020, section 7: 1.5x the data-parallel volume, "about 3 x the parameter bytes").
The whole ring runs at the slowest link's speed: the intra-node bandwidth when every rank is on
one node, the inter-node one otherwise.

Offload (zero3-offload, weights and optimizer states on the host): each rank copies its
weight partition over PCIe for the forward and the backward of every micro-batch and its
gradient partition back, (2 P + G) / W per micro-batch; the node's CPUs then run Adam over
the node's share of the parameters, bound by host memory bandwidth (ZeRO-Offload, Ren et al.
2021, section 4.1): ADAM_HOST_BYTES_PER_PARAM at HOST_ADAM_BANDWIDTH.
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune_contract.strategies import strategy as strategy_row

from finetune_operator.planner.estimate import utilization
from finetune_operator.planner.gpus import GB, Gpu, Links
from finetune_operator.planner.memory import element_bytes
from finetune_operator.planner.parameters import ParameterCount

# Communication is assumed not to overlap compute: conservative, and what ZeRO-3's prefetch
# and DDP's bucketing achieve varies with the model and the network.
OVERLAP = 0.0
# CPU Adam reads and writes about 30 bytes per parameter (fp32 weight, gradient, momentum,
# variance, and the 16-bit copy back; memory.CPU_ADAM_CPUS_PER_RANK says the same).
ADAM_HOST_BYTES_PER_PARAM = 30
# Host memory bandwidth CPU Adam achieves on one node: an assumption, about a third of a
# two-socket DDR5 server's 600+ GB/s peak, as the OpenMP update is not a pure stream.
HOST_ADAM_BANDWIDTH = 200 * GB
# DDP keeps fp32 gradients under autocast (memory.state_terms) and all-reduces those.
DDP_GRADIENT_BYTES = 4


@dataclass(frozen=True)
class Step:
    """Seconds of one optimizer step, by part, and the tokens it trains."""

    compute: float
    communication: float
    offload: float
    tokens: int

    @property
    def seconds(self) -> float:
        return self.compute + (1 - OVERLAP) * self.communication + self.offload

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Work:
    """What one step of a layout trains: the model and the batch, not where it runs."""

    count: ParameterCount
    trainable: int
    backward_through: int
    layers_with_grad: int
    precision: str
    seq_len: int
    micro_batch: int
    accumulation: int
    checkpointing: bool


def attention_flops_per_token(hidden: int, seq_len: int, layers: int,
                              layers_with_grad: int) -> float:
    """QK^T and AV: 4 x seq x hidden per layer forward, twice that backward in the layers the
    backward runs through (all of them unless frozen): 12 x seq x hidden per trained layer."""
    forward = 4.0 * seq_len * hidden
    return forward * layers + 2 * forward * layers_with_grad


def flops_per_token(work: Work) -> float:
    """Model FLOPs (estimate.training_flops' accounting) plus attention."""
    shape = work.count.shape
    dense = 2 * work.count.active + 2 * work.trainable + 2 * work.backward_through
    return dense + attention_flops_per_token(shape.hidden_size, work.seq_len,
                                             shape.num_layers, work.layers_with_grad)


def compute_seconds(work: Work, gpu: Gpu) -> float:
    """One rank's share of the step's FLOPs at the assumed utilization."""
    tokens = work.micro_batch * work.accumulation * work.seq_len
    peak = gpu.tflops(work.precision) * 1e12
    mfu = utilization(gpu, checkpointing=work.checkpointing)
    return tokens * flops_per_token(work) / (peak * mfu) if peak > 0 else 0.0


def communication_bytes(strategy: str, work: Work, world: int) -> float:
    """Bytes each rank sends per optimizer step (the formulas in the module docstring)."""
    if world <= 1:
        return 0.0
    f = (world - 1) / world
    e = element_bytes(work.precision)
    weights = e * work.count.total
    if strategy == "ddp":
        return 2 * f * DDP_GRADIENT_BYTES * work.trainable
    gradients = e * work.trainable
    stage = strategy_row(strategy).zero_stage
    if stage == 1:
        return f * (gradients + weights)
    if stage == 2:
        return f * (gradients * work.accumulation + weights)
    return f * (2 * weights + gradients) * work.accumulation  # zero3, fsdp, zero3-offload


def bandwidth(links: Links, nodes: int) -> float:
    """A ring spanning nodes runs at the inter-node link's speed."""
    return links.intra_node if nodes == 1 else links.inter_node


def offload_seconds(work: Work, world: int, gpus_per_node: int, links: Links) -> float:
    """PCIe copies of a rank's partitions and the node's CPU Adam step."""
    e = element_bytes(work.precision)
    per_micro = (2 * e * work.count.total + e * work.trainable) / world
    pcie = per_micro * work.accumulation / links.pcie
    node_params = work.trainable * gpus_per_node / world
    return pcie + node_params * ADAM_HOST_BYTES_PER_PARAM / HOST_ADAM_BANDWIDTH


def step(work: Work, *, strategy: str, nodes: int, gpus_per_node: int, gpu: Gpu,
         links: Links) -> Step:
    """The predicted step of `work` under `strategy` on nodes x gpus_per_node ranks."""
    world = nodes * gpus_per_node
    sent = communication_bytes(strategy, work, world)
    offload = (offload_seconds(work, world, gpus_per_node, links)
               if strategy_row(strategy).offload else 0.0)
    tokens = work.micro_batch * work.accumulation * world * work.seq_len
    return Step(compute=compute_seconds(work, gpu),
                communication=sent / bandwidth(links, nodes) if sent else 0.0,
                offload=offload, tokens=tokens)
