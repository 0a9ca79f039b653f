"""The trainer's Prometheus gauges that tell a run's progress, and the `Progress` field each
fills: rank 0 serves them (finetune_trainer/metrics.py), the operator and the local runner read
them (finetune_operator/scrape.py). A name changes here, for both sides, or nowhere.
"""

from __future__ import annotations

# gauge name -> api.Progress field
PROGRESS_GAUGES: dict[str, str] = {
    "finetune_train_step": "step",
    "finetune_train_total_steps": "total_steps",
    "finetune_train_epoch": "epoch",
    "finetune_train_loss": "loss",
    "finetune_eval_loss": "eval_loss",
    "finetune_train_tokens_per_second": "tokens_per_second",
    "finetune_train_eta_seconds": "eta_seconds",
    "finetune_train_resumed_step": "resumed_from_step",
    "finetune_train_run_seconds": "run_seconds",
    "finetune_train_startup_seconds": "startup_seconds",
    "finetune_train_step_seconds_total": "step_seconds",
    "finetune_train_eval_seconds_total": "eval_seconds",
    "finetune_train_checkpoint_seconds_total": "checkpoint_seconds",
    "finetune_train_peak_memory_bytes": "peak_memory_bytes",
}
