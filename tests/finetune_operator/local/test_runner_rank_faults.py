"""Faults in a 2-rank `finetune run --local`: one rank killed with SIGKILL mid-run, and a rank
killed while it writes a checkpoint. The run must survive both: torchrun stops the other rank
and starts the whole gang again, which resumes from the newest complete checkpoint, never
from a half-written one, and ends at the planned final step with every step trained once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.local_run import finetune_command, write_job

MAX_STEPS = 12
SAVE_STEPS = 4
WAIT_SECONDS = 240
RUN_TIMEOUT = 300

# Loaded by every Python process of the run through PYTHONPATH (sitecustomize). In rank 0
# only, and only once per run, it replaces torch.save: when the optimizer state of
# checkpoint-KILL_AT_STEP is written, half of its bytes reach the file, then the rank sends
# itself SIGKILL. That is a real kill at a real moment of a real checkpoint write.
KILL_DURING_SAVE_HOOK = '''
import os
if os.environ.get("RANK") == "0" and os.environ.get("KILL_DURING_SAVE_DIR"):
    import io, signal
    import torch
    _done = os.path.join(os.environ["KILL_DURING_SAVE_DIR"], "killed")
    _target = "checkpoint-%s" % os.environ["KILL_AT_STEP"]
    _save = torch.save

    def save(obj, f, *args, **kwargs):
        name = str(f)
        if _target in name and name.endswith("optimizer.pt") and not os.path.exists(_done):
            buffer = io.BytesIO()
            _save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            with open(name, "wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                os.fsync(out.fileno())
            with open(_done, "w") as mark:
                mark.write(name)
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(obj, f, *args, **kwargs)

    torch.save = save
'''


def _summary(output: Path) -> dict:
    return json.loads((output / "training_summary.json").read_text())


def _rank_pids(config: Path) -> dict[int, int]:
    """RANK -> pid of the live trainer processes of the run using `config`."""
    found: dict[int, int] = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
            if b"finetune_trainer" not in argv or str(config).encode() not in argv:
                continue
            if b"torch.distributed.run" in argv or any(a.endswith(b"torchrun") for a in argv):
                continue  # the launcher, not a rank
            state = (cmdline.parent / "stat").read_text().rpartition(")")[2].split()[0]
            environ = (cmdline.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = next((int(e.split(b"=", 1)[1]) for e in environ if e.startswith(b"RANK=")), None)
        if rank is not None and state != "Z":
            found[rank] = int(cmdline.parent.name)
    return found


def _wait(what: str, check, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if process.poll() is not None:
            break
        time.sleep(0.1)
    _stop(process)
    pytest.fail(f"{what} never happened; log:\n{log.read_text() if log.exists() else ''}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # the CLI stops its whole process group
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _assert_every_step_trained_once(summary: dict) -> None:
    steps = [point["step"] for point in summary["lossCurve"]]
    assert steps == list(range(1, MAX_STEPS + 1)), steps


def _complete_steps(output: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in output.glob("checkpoint-*/COMPLETE"))


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.distributed
def test_sigkill_of_one_rank_restarts_the_gang_from_the_latest_complete_checkpoint(tmp_path):
    job = write_job(tmp_path / "job", max_steps=MAX_STEPS, save_steps=SAVE_STEPS)
    output = tmp_path / "out"
    config = output / "trainer-config.yaml"
    log = output / "train.log"
    with (tmp_path / "cli.out").open("w") as cli_out:
        process = subprocess.Popen(finetune_command(job, output, "--no-sample"), cwd=tmp_path,
                                   stdout=cli_out, stderr=subprocess.STDOUT)
    try:
        _wait("a complete checkpoint", lambda: _complete_steps(output), process, log)
        before = _wait("both ranks", lambda: len(p := _rank_pids(config)) == 2 and p,
                       process, log)
        complete_at_kill = _complete_steps(output)[-1]
        os.kill(before[1], signal.SIGKILL)  # rank 1 only; rank 0 and torchrun live on
        status = process.wait(RUN_TIMEOUT)
    finally:
        _stop(process)
    text = log.read_text()
    assert status == 0, (tmp_path / "cli.out").read_text() + text
    summary = _summary(output)
    # torchrun saw rank 1 die, and the restarted gang resumed instead of starting over
    assert "(exitcode: -9) local_rank: 1" in text
    resumed = summary["resumedFrom"]
    assert resumed is not None, text
    assert int(Path(resumed).name.split("-")[1]) >= complete_at_kill
    # ... and ended where an uninterrupted run of the same job ends
    assert summary["steps"] == summary["totalSteps"] == MAX_STEPS
    _assert_every_step_trained_once(summary)
    assert summary["strategy"]["worldSize"] == 2


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.distributed
def test_kill_during_a_checkpoint_write_never_resumes_the_partial_checkpoint(tmp_path):
    kill_at = 2 * SAVE_STEPS
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_DURING_SAVE_HOOK)
    job = write_job(tmp_path / "job", max_steps=MAX_STEPS, save_steps=SAVE_STEPS)
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(hook), os.environ.get("PYTHONPATH", "")])),
        "KILL_DURING_SAVE_DIR": str(hook), "KILL_AT_STEP": str(kill_at)}
    result = subprocess.run(finetune_command(job, output, "--no-sample"), cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    log = (output / "train.log").read_text()
    # the hook really fired: rank 0 died half-way through checkpoint-8's optimizer state
    killed = (hook / "killed").read_text()
    assert killed == str(output / f"checkpoint-{kill_at}" / "optimizer.pt")
    assert result.returncode == 0, result.stdout + result.stderr + log
    # the restarted gang threw the partial checkpoint away and resumed from the one before
    assert f"removed checkpoint-{kill_at}: its save was cut short" in log
    assert f"resuming from checkpoint-{kill_at - SAVE_STEPS} at step {kill_at - SAVE_STEPS}" in log
    summary = _summary(output)
    assert summary["resumedFrom"] == str(output / f"checkpoint-{kill_at - SAVE_STEPS}")
    assert summary["steps"] == summary["totalSteps"] == MAX_STEPS
    _assert_every_step_trained_once(summary)
    # every checkpoint left behind is complete, the re-written one included
    for checkpoint in output.glob("checkpoint-*"):
        assert (checkpoint / "COMPLETE").is_file(), checkpoint


if sys.platform != "linux":  # /proc, process groups, SIGKILL
    pytestmark = pytest.mark.skip("needs Linux")
