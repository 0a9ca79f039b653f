"""The operator's tests: settings for fast loops, set before the operator reads them.

The tests that run the operator (kopf in this process, or `kopf run` in one of its own) work
against the emulated API server of tests/support (emulator.py, wiring.py, kube_faults.py).
"""

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

# The Hub stand-in serving a tiny model, for the tests of sizing a model the catalog lacks.
from tests.support.hub_standin import tiny_hub, tiny_model  # noqa: F401
