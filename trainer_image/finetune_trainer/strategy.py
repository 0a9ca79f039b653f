"""The planned distribution strategy: what to ask for, what to refuse, what to verify.

`deepspeed_config` generates the DeepSpeed config for the ZeRO strategies (values left on
"auto" are filled in by transformers from the training arguments, so batch sizes and
precision have one source: the plan). `refusal` names the combinations this trainer will not
run, before any work is done. `check_wrapper` runs after setup and fails loudly when the model
is not held by the wrapper the plan asked for: accelerate silently falls back to DDP when FSDP
is requested on CPU, and a run that trains under the wrong wrapper only looks fine.
"""

from __future__ import annotations

from typing import Any

from finetune_contract import rules
from finetune_contract.strategies import (
    ZERO3_MAX_LIVE_PARAMETERS,
    ZERO3_MAX_REUSE_DISTANCE,
)
from finetune_contract.strategies import strategy as strategy_row

from finetune_trainer.errors import TrainerError


class StrategyMismatch(TrainerError):
    """The model ended up under a different wrapper than the plan's strategy."""


def deepspeed_config(strategy: str, device: str, *,
                     load_universal: bool = False) -> dict[str, Any] | None:
    """DeepSpeed config for a ZeRO strategy; None for the others. `load_universal`: the run
    resumes a checkpoint written by another number of ranks through its universal conversion
    (reshard.py)."""
    row = strategy_row(strategy)
    stage = row.zero_stage
    if stage is None:
        return None
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": device == "cuda",  # overlapping needs CUDA streams
        "contiguous_gradients": True,
        # DeepSpeed's default is 5e8 elements: a 2 GB fp32 bucket per rank whatever the model.
        # "auto" lets transformers size it from the model (hidden_size^2).
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        # The final model is saved as one consolidated 16-bit state dict.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        # Also sized from hidden_size by transformers (0.9 h^2 and 10 h) instead of DeepSpeed's
        # fixed defaults, which prefetch more than a small model holds in total. The planner
        # counts the same values (finetune_operator/planner/memory.py: zero_bucket_elements).
        zero["stage3_prefetch_bucket_size"] = "auto"
        zero["stage3_param_persistence_threshold"] = "auto"
        # How many gathered parameters stay gathered between a module's forward and its
        # backward: the contract holds these numbers, the planner counts what they keep
        # (finetune_operator/planner/memory.py: zero3_retained_elements).
        zero["stage3_max_live_parameters"] = ZERO3_MAX_LIVE_PARAMETERS
        zero["stage3_max_reuse_distance"] = ZERO3_MAX_REUSE_DISTANCE
    if row.offload:
        pin = device == "cuda"
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        # The optimizer is the trainer's own AdamW (it carries the per-layer groups), not
        # DeepSpeed's fused CPU Adam, which would need a compiled extension.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,  # progress goes to the metrics, not DeepSpeed's log
    }
    if load_universal:
        # The engine then reads the tag from checkpoint-N/latest_universal and re-partitions
        # the merged states for this world size; only for that resume, because it also skips
        # the module's own state dict and expects the universal layout.
        config["checkpoint"] = {"load_universal": True}
    return config


def uses_zero(strategy: str) -> bool:
    """Whether the strategy trains under DeepSpeed ZeRO (its checkpoints are sharded per
    rank)."""
    return strategy_row(strategy).zero_stage is not None


def refusal(strategy: str, device: str, *, tuning: str, l2_to_pretrained: float,
            precision: str, merge: bool = False) -> str | None:
    """Why this combination cannot run, or None: the contract's rules
    (finetune_contract/rules.py), with the messages `finetune validate` gives, named by the
    field of the plan they refuse."""
    refusals = rules.strategy_refusals(strategy, device, tuning=tuning,
                                       l2_to_pretrained=l2_to_pretrained, merge=merge)
    if refusals:
        return f"plan.strategy: {refusals[0]}"
    precision_refusal = rules.precision_refusal(precision, device)
    return f"plan.precision: {precision_refusal}" if precision_refusal else None


def expected_wrapper(strategy: str, world_size: int) -> str:
    """The wrapper that must hold the model after setup."""
    stage = strategy_row(strategy).zero_stage
    if stage is not None:
        return f"deepspeed-zero{stage}"
    if strategy == "fsdp":
        return "fsdp"
    return "ddp" if world_size > 1 else "none"


def wrapper_of(model: Any) -> str:
    """Name the wrapper that holds `model`: deepspeed-zeroN, fsdp, ddp or none."""
    try:
        import deepspeed
    except ImportError:  # deepspeed is optional for ddp-only images
        deepspeed = None
    if deepspeed is not None and isinstance(model, deepspeed.DeepSpeedEngine):
        return f"deepspeed-zero{model.zero_optimization_stage()}"
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # older torch has only FSDP1
        FSDPModule = FullyShardedDataParallel
    if isinstance(model, FullyShardedDataParallel | FSDPModule):
        return "fsdp"
    if isinstance(model, DistributedDataParallel):
        return "ddp"
    return "none"


def check_wrapper(model: Any, strategy: str, world_size: int) -> str:
    """Raise StrategyMismatch unless `model` is held by the planned wrapper."""
    expected, actual = expected_wrapper(strategy, world_size), wrapper_of(model)
    # One DDP rank is one replica, wrapped or not: under torchrun accelerate wraps it (the
    # process group exists), run as a plain process it does not. Both are the planned layout.
    if (expected, actual) == ("none", "ddp") and strategy == "ddp":
        return actual
    if actual != expected:
        raise StrategyMismatch(
            f"plan.strategy {strategy} expects the model under {expected} with "
            f"{world_size} rank(s), but after setup it is under {actual}; refusing to train "
            "with a strategy other than the planned one"
        )
    return actual
