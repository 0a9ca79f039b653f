"""Start torchrun in its own process group and stop every rank of it, never just the launcher.

torchrun runs in a new session, so a Ctrl-C on the terminal reaches only `finetune`, which
then stops the whole group: the signal it got first (SIGINT or SIGTERM: the ranks write their
emergency checkpoint and exit, torchrun reaps them), SIGKILL for whatever is still alive after
the plan's grace period. Killing only torchrun would leave ranks training in the background. On Linux the launcher also asks the kernel to send SIGTERM to
torchrun should `finetune` itself die without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

# The wait before SIGKILL when the plan sets none (planner/storage.py sizes it for the
# emergency checkpoint).
STOP_GRACE_SECONDS = 30.0
# A rank that dies (killed, out of memory) makes torchrun stop the others and start the whole
# gang again, which resumes from the newest complete checkpoint. Once: a mistake in the data or
# the config fails the same way again, and its one-line reason is in the log either way.
MAX_RESTARTS = 1
KILL_WAIT_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


def torchrun_command(config_path: Path, nproc: int, python: str = sys.executable, *,
                     grace_seconds: float = STOP_GRACE_SECONDS) -> list[str]:
    """The launch command; torchrun next to the interpreter, else its module form. torchrun
    kills its ranks `--shutdown-timeout` seconds after a signal (30 by default): it waits as
    long as the launcher does, so their emergency checkpoint is not cut short."""
    torchrun = Path(python).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [python, "-m", "torch.distributed.run"]
    return [*launcher, f"--max-restarts={MAX_RESTARTS}", "--standalone",
            f"--nproc-per-node={nproc}", f"--shutdown-timeout={math.ceil(grace_seconds)}",
            "-m", "finetune_trainer", "--config", str(config_path)]


def rank_environment(base: Mapping[str, str], device: str) -> dict[str, str]:
    """The environment of the ranks: one thread per CPU rank, live logs, no fork warnings.

    Two ranks with two threads each on a 2-core machine was measured to collapse when the
    other core is busy; torchrun would set one thread anyway, but says so in a warning.
    """
    env = dict(base)
    env["PYTHONUNBUFFERED"] = "1"
    # A restarted gang must not meet in the store of the first one: with torchrun's shared
    # rendezvous store the new ranks read the dead ranks' gloo addresses and fail to connect
    # ("Gloo connectFullMesh failed ... Connection refused"). Unshared, rank 0 of every round
    # hosts a fresh store.
    env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would look for CUDA otherwise
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


# Ports below the kernel's ephemeral range: no socket the ranks open themselves (the
# rendezvous store, gloo's connections, HTTP clients) is given one of them meanwhile.
LOWEST_PORT = 10000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port_block(count: int, host: str = "127.0.0.1", attempts: int = 50,
                    rng: random.Random | None = None) -> int:
    """A port p with p .. p+count-1 all free (rank r serves metrics on p + r), below the
    ephemeral range."""
    rng = rng or random.Random()
    top = _ephemeral_start() - count
    for _ in range(attempts):
        base = rng.randrange(LOWEST_PORT, max(LOWEST_PORT + 1, top))
        if all(_port_free(host, base + i) for i in range(count)):
            return base
    raise OSError(f"found no {count} consecutive free ports on {host}")


def _ephemeral_start() -> int:
    """The first port the kernel hands out by itself (Linux's default range starts at
    32768; elsewhere, and when it cannot be read, that figure)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _prepare_child() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux only), and SIGINT
    handled again. A `finetune` started in the background (`cmd &`, nohup, CI) inherits
    SIGINT ignored, and so would torchrun and its ranks: the stop this launcher forwards
    must reach them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TrainingProcess:
    """torchrun and its ranks, in a session of their own, logging to a file."""

    def __init__(self, command: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_prepare_child if sys.platform == "linux" else None,  # noqa: PLW1509
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def stop(self, grace: float = STOP_GRACE_SECONDS,
             first: signal.Signals = signal.SIGTERM) -> int:
        """Stop every process of the group: `first`, then SIGKILL after `grace` seconds for
        whatever still lives; returns torchrun's exit status."""
        self._signal_group(first)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._group_alive():
            time.sleep(0.2)
            self.process.poll()  # reap torchrun so the group check sees the ranks only
        if self._group_alive():
            self._signal_group(signal.SIGKILL)
        status = self.process.wait()
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILLed ranks take a moment to go
        self.close()
        return status

    def close(self) -> None:
        self._log.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def _group_alive(self) -> bool:
        return group_alive(self.process.pid)


def group_alive(pgid: int) -> bool:
    """Whether a process group still has a live (non-zombie) member.

    Zombies count as gone: in a container without an init process orphans are never
    reaped, and they hold no resources.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        # after "pid (comm)": state, ppid, pgrp
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
