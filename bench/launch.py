"""Start a 2-rank torchrun in its own process group, wait with a deadline, kill the group.

Every bench section launches ranks through here so the environment is the same everywhere:
caches inside the project, no hub access, and for CPU ranks one OpenMP thread per rank (two
threads per rank on a shared 2-core machine collapse), DeepSpeed on its CPU accelerator and
CUDA hidden. CUDA ranks (the GPU section) see the GPUs and keep DeepSpeed's CUDA accelerator.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT = 600.0


class LaunchError(RuntimeError):
    """The ranks failed or overran; carries the end of their log."""


# What only CPU ranks get: a GPU rank would lose its device to the last two, and its host-side
# work (loading the weights, the data pipeline) would run on one thread.
CPU_RANK_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "DS_ACCELERATOR": "cpu",
    "CUDA_VISIBLE_DEVICES": "",
}


def rank_environment(extra: Mapping[str, str] | None = None,
                     device: str = "cpu") -> dict[str, str]:
    env = dict(os.environ)
    env.update(CPU_RANK_ENVIRONMENT if device == "cpu" else {"DS_ACCELERATOR": "cuda"})
    env.update({
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        # The bench modules import as `bench.*` from the ranks too.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    })
    env.setdefault("HF_HOME", str(ROOT / ".cache" / "huggingface"))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    env.update(extra or {})
    return env


def torchrun(script_args: list[str], *, nproc: int = 2) -> list[str]:
    """torchrun next to this interpreter, `--standalone` (a free rendezvous port each time)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", *script_args]


def run_ranks(command: list[str], log: Path, *, env: Mapping[str, str] | None = None,
              timeout: float = DEFAULT_TIMEOUT, device: str = "cpu") -> float:
    """Run `command` (torchrun ...) to completion; returns its wall seconds.

    The ranks run in a new session; on timeout or Ctrl-C the whole group is killed, not just
    torchrun (which would leave ranks training in the background).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=rank_environment(env, device), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=ROOT)
        try:
            status = process.wait(timeout)
        except BaseException:
            _kill_group(process)
            raise
    if status != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise LaunchError(f"{' '.join(command[:6])}... exited {status}; log {log}:\n{tail}")
    return time.perf_counter() - started


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
