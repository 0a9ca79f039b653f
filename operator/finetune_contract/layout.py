"""Ports, paths and file names that the trainer, its image, the pods the operator renders and
the local runner must agree on, and the lines of the trainer's log the local runner reads:
each is written here once, for every side.
"""

from __future__ import annotations

# Prometheus endpoint of local rank 0; rank r serves METRICS_PORT + r.
METRICS_PORT = 9400
# torchrun's c10d rendezvous, served by node rank 0.
RENDEZVOUS_PORT = 29500
# The trainer image's non-root user: pods run as it, so what the image owns stays writable.
TRAINER_UID = 1000
# Where pods mount the data; the CPU image ships the example data there.
DATA_ROOT = "/data"
# Output directory inside a pod when spec.output.path is relative.
OUTPUT_ROOT = "/output"
# What a finished run leaves in its output directory.
FINAL_DIR = "final"
# Under FINAL_DIR with output.merge (tuning lora, qlora): the base with the adapters merged in.
MERGED_DIR = "merged"
SUMMARY_FILE = "training_summary.json"
# Under the output path: the run's loss, evaluation loss and tokens/s by step, a PNG.
PLOT_FILE = "training_curves.png"
# Under the output path with training.reportTo [tensorboard]: the event files.
TENSORBOARD_DIR = "tensorboard"
# How the trainer's one-line reports on stderr start: a mistake the user can fix, and a stop
# on a signal after the emergency checkpoint. `finetune run --local` shows them from the log.
TRAINER_ERROR_PREFIX = "finetune-trainer: error:"
TRAINER_STOPPED_PREFIX = "finetune-trainer: stopped:"
# The trainer's exit status after its emergency checkpoint on SIGTERM or SIGINT: 128 + SIGTERM,
# as if killed by it. The operator reads it as "stopped", not as the cause of a failure.
EXIT_STOPPED = 143
# The training container's command: torchrun, exiting EXIT_STOPPED when SIGTERM stopped it.
TRAINER_LAUNCH_COMMAND = ("python", "-m", "finetune_trainer.launch")
