"""What a finished run reports in training_summary.json: the plan and the wrapper that held
the model, steps, losses, tokens and throughput, the data report, and where the model went."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune_contract.layout import FINAL_DIR
from finetune_contract.trainer_config import TrainerConfig

from finetune_trainer.data import DataReport


def build_summary(config: TrainerConfig, trainer: Any, parts: Any, report: DataReport,
                  resumed_from: Path | None, wall_seconds: float) -> dict[str, Any]:
    state = trainer.state
    curve = [{"step": e["step"], "loss": e["loss"]} for e in state.log_history if "loss" in e]
    evals = [{"step": e["step"], "loss": e["eval_loss"]} for e in state.log_history
             if "eval_loss" in e]
    tokens = int(state.num_input_tokens_seen or 0)
    tokens_this_run = tokens - parts.tokens_at_start(trainer)
    train_seconds = parts.train_seconds(trainer)
    return {
        "finetunejob": config.name,
        "namespace": config.namespace,
        "plan": config.plan.to_wire(),
        "strategy": {"planned": config.plan.strategy, "wrapper": parts.wrapper_check.found,
                     "worldSize": config.plan.world_size},
        "steps": state.global_step,
        "totalSteps": state.max_steps,
        "epochs": state.epoch,
        "earlyStopped": state.global_step < state.max_steps,
        "tokens": tokens,
        "parameters": parts.parameters,
        "trainableParameters": parts.trainable_parameters,
        "lossCurve": curve,
        # Tokens/s of all ranks at each log of this run (a resumed run: its own steps only).
        "throughputCurve": parts.throughput.throughput if parts.throughput else [],
        "firstLoss": curve[0]["loss"] if curve else None,
        "lastLoss": curve[-1]["loss"] if curve else None,
        "evalLoss": evals[-1]["loss"] if evals else None,
        "evalCurve": evals,
        "bestEvalLoss": state.best_metric,
        "bestCheckpoint": state.best_model_checkpoint,
        "tokensPerSecond": tokens_this_run / train_seconds if train_seconds else None,
        "trainSeconds": train_seconds,
        "wallSeconds": wall_seconds,
        # This run's wall time since its process started, by where it went, and its goodput.
        "time": parts.times.report() if parts.times else None,
        "data": report.to_dict(),
        "resumedFrom": str(resumed_from) if resumed_from else None,
        "unfreezeSchedule": parts.unfreeze.schedule if parts.unfreeze else None,
        "l2DistanceToPretrained": (parts.anchor.distance(trainer.model)
                                   if parts.anchor is not None else None),
        "finalModel": str(Path(config.output_dir) / FINAL_DIR),
    }


def write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    tmp.replace(path)
