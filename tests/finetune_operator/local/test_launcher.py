"""The torchrun command line, the ranks' environment, ports, and stopping a whole group."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from finetune_operator.local import launcher
from finetune_operator.local.launcher import (
    STOP_GRACE_SECONDS,
    TrainingProcess,
    free_port_block,
    rank_environment,
    torchrun_command,
)


def test_torchrun_command_runs_the_trainer_module(tmp_path):
    cmd = torchrun_command(tmp_path / "c.yaml", 2)
    assert cmd[-7:] == ["--standalone", "--nproc-per-node=2",
                        f"--shutdown-timeout={int(STOP_GRACE_SECONDS)}", "-m",
                        "finetune_trainer", "--config", str(tmp_path / "c.yaml")]


def test_torchrun_waits_for_the_ranks_as_long_as_the_stop_grace_period(tmp_path):
    cmd = torchrun_command(tmp_path / "c.yaml", 2, grace_seconds=117.5)
    assert "--shutdown-timeout=118" in cmd
    assert Path(cmd[0]).name == "torchrun" or cmd[1:3] == ["-m", "torch.distributed.run"]


def test_torchrun_command_falls_back_to_the_module_form(tmp_path):
    cmd = torchrun_command(tmp_path / "c.yaml", 1, python=str(tmp_path / "bin" / "python"))
    assert cmd[:3] == [str(tmp_path / "bin" / "python"), "-m", "torch.distributed.run"]


def test_cpu_ranks_get_one_thread_and_the_cpu_accelerator():
    env = rank_environment({"PATH": "/bin", "OMP_NUM_THREADS": "8"}, "cpu")
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["DS_ACCELERATOR"] == "cpu"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"] == "/bin"
    gpu = rank_environment({"OMP_NUM_THREADS": "8"}, "cuda")
    assert gpu["OMP_NUM_THREADS"] == "8" and "DS_ACCELERATOR" not in gpu


def test_free_port_block_is_bindable_and_below_the_ephemeral_range():
    base = free_port_block(3)
    for port in range(base, base + 3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    with socket.socket() as ephemeral:  # what the kernel hands a socket that asks for none
        ephemeral.bind(("127.0.0.1", 0))
        assert base + 3 <= ephemeral.getsockname()[1]
    assert base >= launcher.LOWEST_PORT


def test_a_taken_port_in_the_block_is_skipped():
    rng = random.Random(7)
    first = free_port_block(2, rng=random.Random(7))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        assert free_port_block(2, rng=rng) != first


# A process that starts a grandchild (like torchrun starts ranks), both print their pids.
FAMILY = """
import os, signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(os.getpid(), child.pid, flush=True)
time.sleep(300)
"""


def _start_family(tmp_path: Path, mode: str) -> tuple[TrainingProcess, list[int]]:
    log = tmp_path / "family.log"
    process = TrainingProcess([sys.executable, "-c", FAMILY, mode], dict(os.environ), log)
    for _ in range(100):
        text = log.read_text() if log.exists() else ""
        if text.strip():
            return process, [int(p) for p in text.split()]
        time.sleep(0.1)
    process.stop(grace=0)
    raise AssertionError("the test family never started")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_stop_ends_the_launcher_and_its_children(tmp_path):
    process, pids = _start_family(tmp_path, "polite")
    assert os.getpgid(pids[1]) == process.pid  # the grandchild is in the launcher's group
    assert os.getpgid(process.pid) != os.getpgid(0)  # ... which is not ours (no Ctrl-C)
    process.stop(grace=10)
    assert not any(_alive(pid) for pid in pids)


def test_stop_sends_the_first_signal_it_is_given(tmp_path):
    process, pids = _start_family(tmp_path, "polite")
    status = process.stop(grace=10, first=signal.SIGINT)
    assert status == -signal.SIGINT  # Python's default: KeyboardInterrupt, then exit
    assert not any(_alive(pid) for pid in pids)


def test_stop_kills_a_group_that_ignores_sigterm(tmp_path):
    process, pids = _start_family(tmp_path, "stubborn")
    status = process.stop(grace=0.5)
    assert status == -9  # SIGKILL after the grace period
    assert not any(_alive(pid) for pid in pids)


# `finetune` itself: starts the family through TrainingProcess, prints the launcher's pid.
RUNNER = """
import os, sys, time
from pathlib import Path
from finetune_operator.local.launcher import TrainingProcess
process = TrainingProcess([sys.executable, "-c", sys.argv[1], "polite"], dict(os.environ),
                          Path(sys.argv[2]))
print(process.pid, flush=True)
time.sleep(300)
"""


def test_the_launcher_gets_sigterm_when_finetune_is_killed(tmp_path):
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, FAMILY, str(tmp_path / "f.log")],
                              stdout=subprocess.PIPE, text=True)
    launcher = int(runner.stdout.readline())
    try:
        assert _alive(launcher)
        runner.kill()  # SIGKILL: finetune gets no chance to clean up
        runner.wait()
        for _ in range(100):
            if not _alive(launcher):
                break
            time.sleep(0.1)
        assert not _alive(launcher), "the launcher outlived finetune"
    finally:
        # The test family's grandchild has no torchrun to forward the signal: end it here.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher, signal.SIGKILL)
