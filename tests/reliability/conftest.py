"""Reliability tests: bad input, faults, load and secrets against the real operator, the real
trainer and `finetune run --local`.

The operator tests reuse the operator's test fixtures (tests/operator: the kmock emulator
subclass and the KopfRunner helpers), so that folder is put on the import path and the
operator's fast-loop settings are set before `finetune_operator.main` is first imported,
with the same values tests/operator/conftest.py uses.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPERATOR_TESTS = HERE.parent / "operator"
if str(OPERATOR_TESTS) not in sys.path:
    sys.path.insert(0, str(OPERATOR_TESTS))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


os.environ.setdefault("FINETUNE_RESYNC_INTERVAL", "0.5")
os.environ.setdefault("FINETUNE_PROGRESS_INTERVAL", "0.5")
os.environ.setdefault("FINETUNE_UNSCHEDULABLE_AFTER", "60")
os.environ.setdefault("FINETUNE_DEFAULT_IMAGE", "registry.test/finetune-trainer:test")
os.environ.setdefault("FINETUNE_METRICS_PORT", str(_free_port()))
