"""What a run keeps on disk and in its pods' volumes, in bytes: one checkpoint, the final model,
the output directory at its fullest, /dev/shm and the scratch volume; and the time a pod
needs on SIGTERM to write its emergency checkpoint (the termination grace period).

render.py gives every emptyDir its sizeLimit from `volume_sizes`, so a run that outgrows its
volume is evicted with a message instead of filling the node's disk (or, for /dev/shm, its
memory). The bytes per parameter come from memory.py's state terms: what a strategy keeps of
weights and optimizer states is what it saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from finetune_contract.api import FineTuneJobSpec, Plan
from finetune_contract.rules import ADAPTER_TUNINGS, trained_tuning

from finetune_operator.planner import memory
from finetune_operator.planner.gpus import GIB, MIB
from finetune_operator.sizes import format_bytes

# /dev/shm per rank: NCCL's shared-memory transport between the ranks of a node and
# DeepSpeed's CPU collective keep their buffers there (the trainer runs no DataLoader
# workers). Docker's 64 MiB default is too small for NCCL; 1 GiB a rank is ample. It is
# memory: what is used counts against the pod's memory.
SHARED_MEMORY_PER_RANK = GIB
# /tmp: HOME, the kernels DeepSpeed and Triton compile, and the Hugging Face datasets of
# hf: sources (downloads and the Arrow cache under HF_HOME).
SCRATCH = 32 * GIB
# The output directory besides checkpoints and models: tokenizer, trainer state, summary.
OUTPUT_SMALL_FILES = GIB
# A model's weights as the Hub stores them: fp32 at most (most are bf16, half of it). A
# limit that is too large costs nothing; one too small evicts the pod mid-download.
HUB_BYTES_PER_PARAMETER = 4
# The write speed the grace period assumes for a checkpoint, all ranks together: the baseline
# throughput of a general-purpose network volume (EBS gp3, most CSI and NFS volumes). Local
# NVMe writes faster, so the period is long enough there too; a slower volume needs the
# periodic checkpoints (training.saveSteps) to bound what a preemption loses.
CHECKPOINT_WRITE_BYTES_PER_SECOND = 125 * MIB
# After the write: the COMPLETE marker, the process group's teardown and the exit.
GRACE_MARGIN_SECONDS = 15
# Kubernetes' own default, the least a pod gets; and the most: a node drain or a spot reclaim
# (two minutes' notice on AWS, 30 s on GCP) does not wait longer, and a deleted job's pods
# should not linger for more than an hour.
GRACE_MIN_SECONDS = 30
GRACE_MAX_SECONDS = 3600


@dataclass(frozen=True)
class VolumeSizes:
    """The size limit of each emptyDir of a training pod, in bytes."""

    shared_memory: int
    scratch: int
    output: int  # only used without output.pvc


def volume_sizes(spec: FineTuneJobSpec, plan: Plan, *, model_on_output: bool) -> VolumeSizes:
    """`model_on_output`: the downloaded base model is cached on the output volume."""
    return VolumeSizes(shared_memory=SHARED_MEMORY_PER_RANK * plan.gpus_per_node,
                       scratch=SCRATCH,
                       output=output_bytes(spec, plan, model_on_output=model_on_output))


def output_bytes(spec: FineTuneJobSpec, plan: Plan, *, model_on_output: bool) -> int:
    """The output directory at its fullest: saveTotalLimit complete checkpoints, the next one
    (written before rotation removes the oldest), the best one that early stopping keeps
    besides them, the final model, and the downloaded base model when it is cached there."""
    training = spec.training
    checkpoints = training.save_total_limit + 1 + bool(training.early_stopping_patience)
    download = download_bytes(plan) if model_on_output else 0
    return (checkpoints * checkpoint_bytes(spec, plan) + final_model_bytes(spec, plan)
            + download + OUTPUT_SMALL_FILES)


def download_bytes(plan: Plan) -> int:
    """The base model's weights as downloaded from the Hub, at most."""
    return HUB_BYTES_PER_PARAMETER * plan.parameters


def checkpoint_bytes(spec: FineTuneJobSpec, plan: Plan) -> int:
    """One checkpoint-N/, all ranks' files together: the weights and optimizer states the
    strategy keeps (gradients are not saved), and under DeepSpeed the 16-bit model that
    transformers writes beside the engine's own states. With adapters, only theirs: peft
    saves the adapters alone, the optimizer holds nothing else, and transformers asks
    DeepSpeed to leave the frozen base out of its states (exclude_frozen_parameters)."""
    states = _whole_states(spec, plan)
    extra = _saved_weights(spec, plan) if memory.is_deepspeed(plan.strategy) else 0
    return states["weights"] + states["optimizer"] + extra


def final_model_bytes(spec: FineTuneJobSpec, plan: Plan) -> int:
    """final/: the weights as the trained model holds them (fp32 under DDP and FSDP, the
    working precision under DeepSpeed); with adapters, the adapters, and with output.merge
    the whole model merged in the working precision besides them."""
    merged = 0
    if _adapter_tuning(spec, plan) and spec.output.merge:
        merged = memory.element_bytes(plan.precision) * plan.parameters
    return _saved_weights(spec, plan) + merged


def _saved_weights(spec: FineTuneJobSpec, plan: Plan) -> int:
    return _whole_states(spec, plan)["weights"]


def _adapter_tuning(spec: FineTuneJobSpec, plan: Plan) -> str | None:
    """lora or qlora when the run trains adapters (tuning: auto says so in plan.tuning)."""
    tuning = trained_tuning(spec.method.tuning, plan.tuning)
    return tuning if tuning in ADAPTER_TUNINGS else None


def _whole_states(spec: FineTuneJobSpec, plan: Plan) -> dict[memory.Item, int]:
    """The saved model states of all ranks together (one rank holding everything)."""
    tuning = _adapter_tuning(spec, plan)
    if tuning:
        terms = memory.adapter_state_terms(plan.strategy, plan.precision, tuning)
        trainable = plan.trainable_parameters
        return memory.model_states(terms, trainable, trainable, world=1)
    terms = memory.state_terms(plan.strategy, plan.precision)
    return memory.model_states(terms, plan.parameters, plan.trainable_parameters, world=1)


@dataclass(frozen=True)
class TerminationGrace:
    """The pods' terminationGracePeriodSeconds and how it was reached."""

    seconds: int
    reason: str


def termination_grace(spec: FineTuneJobSpec, plan: Plan) -> TerminationGrace:
    """The step in flight (the trainer stops at the next micro-step's end, so a whole step
    bounds it), then one checkpoint written at the stated speed, then the margin; clamped to
    GRACE_MIN_SECONDS..GRACE_MAX_SECONDS."""
    step = plan.estimate.step_seconds
    size = checkpoint_bytes(spec, plan)
    write = size / CHECKPOINT_WRITE_BYTES_PER_SECOND
    need = math.ceil(step + write + GRACE_MARGIN_SECONDS)
    seconds = min(max(need, GRACE_MIN_SECONDS), GRACE_MAX_SECONDS)
    reason = (f"{seconds} s on SIGTERM: a step ({step:.0f} s) + writing the "
              f"{format_bytes(size)} checkpoint at "
              f"{format_bytes(CHECKPOINT_WRITE_BYTES_PER_SECOND)}/s ({write:.0f} s) + "
              f"{GRACE_MARGIN_SECONDS} s")
    if need > GRACE_MAX_SECONDS:
        reason += (f", over the {GRACE_MAX_SECONDS} s cap: the emergency checkpoint cannot "
                   "finish in time, so a preempted run resumes from its last periodic one")
    return TerminationGrace(seconds=seconds, reason=reason)
