"""Training tokens, FLOPs, GPU-hours and cost of a plan.

FLOPs follow the usual 6 x N x D rule (Kaplan et al. 2020; 2 for the forward pass, 4 for the
backward), made trainable-aware: the forward pass touches every (active) parameter, the
backward pass computes weight gradients only for trainable parameters and input gradients
only down to the lowest trainable block, so frozen blocks cost 2 FLOPs per token, not 6.
Recomputation under gradient checkpointing is not model FLOPs: it lowers the utilization
instead.

Time comes from the throughput model (throughput.py) when a step is given: wall-clock hours
are the tokens over its predicted tokens per second (compute, communication, offloading),
GPU-hours those times the ranks; without one (no peak known), from the FLOPs at the assumed
utilization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from finetune_contract.api import CostRange, Estimate

from finetune_operator.planner.gpus import Gpu

# Model FLOPs utilization assumed for the time estimate: a well-tuned fine-tuning run on
# modern GPUs reaches 35-45 %; V100/T4 (fp16, older kernels) less; the CPU value is what a
# 20M-parameter Llama measured on the CI machines (40-58 % of the fp32 GEMM peak).
MFU_GPU = 0.40
MFU_OLD_GPU = 0.30
MFU_CPU = 0.40
# Full recomputation adds a forward pass: 8 instead of 6 FLOPs per parameter and token.
# (Offloading's PCIe copies and CPU Adam step are priced by throughput.py, not here.)
CHECKPOINTING_FACTOR = 6 / 8


@dataclass(frozen=True)
class DatasetStats:
    """What is known about the training data. The local runner measures it; the operator
    cannot read the data, so it plans without."""

    rows: int
    mean_tokens_per_row: float | None = None  # None: assume full-length rows


def _tokens_per_row(stats: DatasetStats | None, seq_len: int) -> tuple[float, str]:
    if stats is None or stats.mean_tokens_per_row is None:
        return seq_len, "full-length sequences assumed"
    return min(stats.mean_tokens_per_row, seq_len), "measured row lengths"


def training_tokens(
    *, seq_len: int, global_batch: int, epochs: float, max_steps: int | None,
    stats: DatasetStats | None,
) -> tuple[int, str]:
    """Tokens the run processes, and how that number was obtained."""
    per_row, basis = _tokens_per_row(stats, seq_len)
    if max_steps is not None:
        return int(max_steps * global_batch * per_row), f"{max_steps} steps, {basis}"
    if stats is not None:
        rows = math.ceil(stats.rows * epochs)
        return int(rows * per_row), f"{stats.rows} rows x {epochs:g} epochs, {basis}"
    return 0, ("no time estimate: the data size is unknown until the run reads it (set "
               "training.maxSteps for one)")


def training_flops(tokens: int, *, active: int, trainable: int, backward_through: int) -> float:
    """2 x active (forward) + 2 x trainable (weight gradients) + 2 x backward_through
    (input gradients) FLOPs per token: 6 x N for full fine-tuning."""
    return float(tokens) * (2 * active + 2 * trainable + 2 * backward_through)


def utilization(gpu: Gpu, *, checkpointing: bool) -> float:
    """The model FLOPs utilization assumed for the compute of a step."""
    if gpu.is_cpu:
        mfu = MFU_CPU
    else:
        mfu = MFU_GPU if gpu.bf16 else MFU_OLD_GPU
    if checkpointing:
        mfu *= CHECKPOINTING_FACTOR
    return round(mfu, 4)


def estimate(
    *, tokens: int, flops: float, step_flops: float, gpu: Gpu, precision: str, world: int,
    checkpointing: bool, basis: str = "", predicted_step: float = 0.0,
    tokens_per_second: float = 0.0,
) -> Estimate:
    """`step_flops`: the FLOPs of one optimizer step of full-length sequences, all ranks;
    `predicted_step` (seconds) and `tokens_per_second`: the chosen layout's, from
    throughput.py (passed in: throughput.py imports this module), which time the run."""
    mfu = utilization(gpu, checkpointing=checkpointing)
    peak = gpu.tflops(precision) * 1e12
    predicted = peak > 0 and predicted_step > 0 and tokens_per_second > 0
    if predicted:
        wall_hours = tokens / tokens_per_second / 3600
        step_seconds = predicted_step
    else:
        wall_hours = flops / (peak * mfu) / 3600 / world if peak > 0 and flops > 0 else 0.0
        step_seconds = step_flops / (peak * mfu) / world if peak > 0 else 0.0
    gpu_hours = wall_hours * world
    return Estimate(
        tokens=tokens,
        flops=flops,
        mfu=mfu,
        gpu_hours=gpu_hours,
        wall_hours=wall_hours,
        step_seconds=step_seconds,
        tokens_per_second=tokens_per_second if predicted else 0.0,
        cost_usd=CostRange(low=gpu_hours * gpu.price_low, high=gpu_hours * gpu.price_high),
        basis=basis,
    )
