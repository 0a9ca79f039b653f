"""A torchrun gang stopped by SIGTERM mid-run, and the resumes that follow: shared by the
preemption tests (DDP, tests/finetune_trainer/test_preemption.py) and the resharding ones
(ZeRO, tests/finetune_trainer/test_reshard_distributed.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from finetune_contract.layout import SUMMARY_FILE

from tests.support.tiny import (
    chat_rows,
    tiny_config,
    tiny_plan,
    tiny_spec,
    torchrun_command,
    trainer_env,
    write_jsonl,
)

DEADLINE = 600  # a safety net (the first ZeRO run compiles DeepSpeed's CPU comm op)


def write_run(root: Path, ranks: int, *, steps: int, global_batch: int, micro: int,
              strategy: str | None = None) -> Path:
    """The data and trainer.yaml of a run on `ranks` ranks with the same global batch
    whatever `ranks` is (the accumulation makes up the difference); `strategy`: the one the
    spec asks for (none: the spec's default, planned as DDP)."""
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "train.jsonl", chat_rows(64))
    resources: dict = {"gpusPerNode": ranks, **({"strategy": strategy} if strategy else {})}
    spec = tiny_spec(training={"maxSteps": steps, "loggingSteps": 1}, resources=resources)
    plan = tiny_plan(strategy=strategy or "ddp", world_size=ranks, gpus_per_node=ranks,
                     micro_batch_size=micro, gradient_accumulation=global_batch // (micro * ranks))
    config = root / "trainer.yaml"
    config.write_text(tiny_config(root, spec=spec, plan=plan).dump_yaml())
    return config


def run(root: Path, config: Path, ranks: int) -> subprocess.CompletedProcess:
    """Train to the end; the run must succeed."""
    proc = subprocess.run(torchrun_command(config, ranks), env=trainer_env(), cwd=root,
                          capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def summary(root: Path) -> dict:
    return json.loads((root / "out" / SUMMARY_FILE).read_text())


def rank_pids(torchrun_pid: int) -> list[int]:
    children = Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def steps_logged(log: Path) -> int:
    return log.read_text(errors="replace").count("'loss':") if log.exists() else 0


def interrupt(root: Path, config: Path, ranks: int, after_steps: int) -> tuple[int, str]:
    """Start the run, SIGTERM its last rank alone once `after_steps` steps were logged (the
    gang must agree), and return its exit status and everything it printed."""
    log = root / "stdout.log"
    with log.open("w") as out:
        proc = subprocess.Popen(torchrun_command(config, ranks), env=trainer_env(), cwd=root,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + DEADLINE
        while steps_logged(log) < after_steps and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.05)
        pids = sorted(rank_pids(proc.pid))
        assert len(pids) == ranks, log.read_text()[-4000:]
        # torchrun starts local rank 0 first; signal the last one only.
        os.kill(pids[-1], signal.SIGTERM)
        status = proc.wait(timeout=DEADLINE)
    return status, log.read_text(errors="replace")
