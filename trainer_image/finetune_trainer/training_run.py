"""One training run of one rank, from a TrainerConfig to a saved model and summary.

The steps: refuse what cannot run, read and check the data, get the tokenizer and model,
freeze what the method freezes, build the TRL (or classification) trainer from the plan
(build.py), resume from the newest complete checkpoint, train while serving metrics, then save
the final model (`output_dir/final`) and `training_summary.json` (summary.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_contract import rules
from finetune_contract.layout import FINAL_DIR, SUMMARY_FILE
from finetune_contract.trainer_config import TrainerConfig

from finetune_trainer import adapters, checkpoints, reshard
from finetune_trainer.config import assistant_only
from finetune_trainer.data import prepare
from finetune_trainer.errors import Stopped, TrainerError
from finetune_trainer.plot import write_plot
from finetune_trainer.strategy import refusal, uses_zero
from finetune_trainer.summary import build_summary, write_json

if TYPE_CHECKING:
    from finetune_trainer import preemption


@dataclass(frozen=True)
class Ranks:
    """Where this process sits, as torchrun describes it."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Ranks:
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("WORLD_SIZE", "1")))


@dataclass
class RunResult:
    summary: dict[str, Any]
    trainer: Any = field(repr=False, default=None)


def preflight(config: TrainerConfig, ranks: Ranks) -> None:
    """Everything that can be refused before reading a byte of data."""
    plan, spec = config.plan, config.spec
    if plan.world_size != ranks.world_size:
        raise TrainerError(f"plan.worldSize is {plan.world_size} but {ranks.world_size} rank(s) "
                           "were started; start torchrun with the planned number of processes")
    reason = refusal(plan.strategy, config.device, tuning=spec.method.tuning,
                     l2_to_pretrained=spec.method.l2_to_pretrained, precision=plan.precision,
                     merge=spec.output.merge)
    if reason:
        raise TrainerError(reason)
    merge = rules.merge_problem(spec.method.tuning, spec.output.merge)
    if merge:
        raise TrainerError(f"spec.output.merge: {merge}")
    for path, message in rules.early_stopping_problems(
            spec.training, rules.has_evaluation(spec.dataset)):
        raise TrainerError(f"{path}: {message}")


def resolve_tuning(config: TrainerConfig) -> TrainerConfig:
    """tuning: auto trains what its plan chose (plan.tuning): the config with that tuning in
    its spec, so every later step reads one concrete method. output.merge stays only when
    adapters were chosen: full fine-tuning saves the whole model anyway."""
    if config.spec.method.tuning != "auto":
        return config
    try:
        tuning = rules.trained_tuning("auto", config.plan.tuning)
    except ValueError as err:
        raise TrainerError(str(err)) from None
    spec = config.spec.model_copy(deep=True)
    spec.method.tuning = tuning
    spec.output.merge = spec.output.merge and tuning in rules.ADAPTER_TUNINGS
    return config.model_copy(update={"spec": spec})


def run(config: TrainerConfig, ranks: Ranks | None = None) -> RunResult:
    ranks = ranks or Ranks.from_env()
    config = resolve_tuning(config)
    preflight(config, ranks)
    group_was_ours = not _group_initialized()  # the trainer creates it below (accelerate)
    if config.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
    started = time.monotonic()
    spec = config.spec
    data = prepare(spec.dataset, resolve=config.resolve, num_labels=spec.method.num_labels,
                   assistant_only_loss=assistant_only(config), seed=spec.training.seed)

    # Imported here, like build: they load transformers, and a config error must be one line.
    from finetune_trainer import build, preemption, tracking

    output_dir = Path(config.output_dir)
    # Found before the build: a ZeRO checkpoint from another number of ranks changes the
    # DeepSpeed config the engine is built from (reshard.py). Incomplete ones never count.
    resume = checkpoints.latest_complete(output_dir)
    resharded = reshard.decide(resume, uses_zero=uses_zero(config.plan.strategy),
                               world_size=ranks.world_size)
    trainer, parts = build.trainer_for(config, data, ranks, load_universal=resharded is not None)
    if ranks.rank == 0:
        for path in checkpoints.remove_incomplete(output_dir):
            print(f"finetune-trainer: removed {path.name}: its save was cut short (no "
                  f"{checkpoints.MARKER} marker)", flush=True)
        print(f"finetune-trainer: {checkpoints.resume_message(resume)}", flush=True)
    if resharded is not None:  # the process group exists now (the trainer's arguments)
        reshard.prepare(resharded, ranks.rank)
    parts.metrics.serve(config.metrics_host,
                        config.metrics_port + ranks.local_rank if config.metrics_port else 0)
    parts.metrics.set("finetune_train_resumed_step", checkpoints.step_of(resume) if resume else 0)
    stop = preemption.PreemptionCallback(preemption.StopRequest(), str(output_dir))
    trainer.add_callback(stop)
    try:
        with stop.request:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        if stop.stopped_at is not None:
            _stopped(stop, ranks, group_was_ours)
        trainer.save_model(str(output_dir / FINAL_DIR))
        if spec.output.merge:
            save_merged(config, trainer, output_dir / FINAL_DIR / adapters.MERGED_DIR, ranks)
    except BaseException:
        tracking.finish(ok=False, preempted=stop.stopped_at is not None)
        raise
    else:
        tracking.finish(ok=True)
    finally:
        parts.metrics.close()
    summary = build_summary(config, trainer, parts, data.report, resume,
                            wall_seconds=time.monotonic() - started)
    if ranks.rank == 0:
        plotted = write_plot(summary, output_dir)
        summary["plot"] = str(plotted) if plotted else None
        write_json(output_dir / SUMMARY_FILE, summary)
    if group_was_ours:
        _leave_process_group()
    return RunResult(summary, trainer)


def _stopped(stop: preemption.PreemptionCallback, ranks: Ranks, group_was_ours: bool) -> None:
    """After the emergency checkpoint: no final model, no summary; every rank leaves with
    the preempted status (the checkpoint is complete: the trainer's save waited for all).
    Rank 0 alone says why: the other ranks' lines would hide its message in the log."""
    if group_was_ours:
        _leave_process_group()
    raise Stopped(stop.message() if ranks.rank == 0 else "")


def save_merged(config: TrainerConfig, trainer: Any, path: Path, ranks: Ranks) -> None:
    """output.merge: rank 0 writes the base with the adapters merged in, in the dtype the
    base trained in, with the tokenizer beside it. Adapters are only ever trained under a
    strategy that keeps the whole model on rank 0 (ddp, zero2: rules.strategy_refusals), so
    rank 0 merges the model it holds; the others wait."""
    import torch

    if ranks.rank == 0:
        model = trainer.accelerator.unwrap_model(trainer.model)
        merged = adapters.merged_model(model, adapters.base_dtype(config.plan.precision))
        merged.save_pretrained(str(path))
        trainer.processing_class.save_pretrained(str(path))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _group_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _leave_process_group() -> None:
    """Tear the process group down before interpreter exit. Left to exit, a rank once
    aborted ("terminate called without an active exception") after a complete run, failing
    the whole gang. The barrier keeps a fast rank from closing while a peer still talks."""
    import torch.distributed as dist

    if _group_initialized():
        dist.barrier()
        dist.destroy_process_group()


__all__ = ["Ranks", "RunResult", "run"]
