"""Operator wiring tests: settings for fast loops, the emulated API server, kopf running."""

from __future__ import annotations

import os
import socket


# The operator reads its settings when finetune_operator.main is imported (kopf timers take
# their interval at registration), so they are set before any test imports it.
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


os.environ["FINETUNE_RESYNC_INTERVAL"] = "0.5"
os.environ["FINETUNE_PROGRESS_INTERVAL"] = "0.5"
os.environ["FINETUNE_UNSCHEDULABLE_AFTER"] = "60"
os.environ["FINETUNE_DEFAULT_IMAGE"] = "registry.test/finetune-trainer:test"
os.environ.setdefault("FINETUNE_METRICS_PORT", str(_free_port()))
