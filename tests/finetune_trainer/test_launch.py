"""The training container's command: torchrun whose exit status tells a stop from a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from finetune_contract.layout import EXIT_STOPPED, TRAINER_LAUNCH_COMMAND

# A rank that says it is ready, then trains until SIGTERM and exits as a stopped trainer does.
STOPPABLE_RANK = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
Path(sys.argv[1]).write_text("ready")
while True:
    time.sleep(0.1)
"""


def _launch(script: Path, *args: str, **popen) -> subprocess.Popen:
    command = [sys.executable, *TRAINER_LAUNCH_COMMAND[1:], "--standalone",
               "--nproc-per-node", "1", "--max-restarts", "0", str(script), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the rank never started"
        time.sleep(0.2)


def test_a_sigterm_stopped_launch_exits_as_stopped_not_as_a_failure(tmp_path):
    script, ready = tmp_path / "rank.py", tmp_path / "ready"
    script.write_text(STOPPABLE_RANK)
    process = _launch(script, str(ready))
    _wait_for(ready, process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == EXIT_STOPPED, output
    assert "torchrun stopped by SIGTERM" in output


@pytest.mark.parametrize("code,expected", [(0, 0), (3, 1)])
def test_a_finished_launch_exits_0_and_a_broken_rank_exits_1(tmp_path, code, expected):
    script = tmp_path / "rank.py"
    script.write_text(f"import sys; sys.exit({code})")
    process = _launch(script)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == expected, output
    assert "torchrun stopped by" not in output
