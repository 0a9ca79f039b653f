"""`python -m finetune_trainer` as a real process: one-line errors, the metrics endpoint
while training, kill -9 and automatic resume from the last complete checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from finetune_contract.layout import SUMMARY_FILE
from finetune_operator.scrape import parse_progress
from finetune_trainer import checkpoints
from finetune_trainer.metrics import GAUGES
from prometheus_client.parser import text_string_to_metric_families

from tests.support.tiny import (
    chat_rows,
    free_port,
    tiny_config,
    tiny_spec,
    trainer_env,
    write_jsonl,
)

pytestmark = pytest.mark.slow
DEADLINE = 240  # seconds; a safety net against a hung process, not a timing assertion


def _start(config_path: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "finetune_trainer", "--config", str(config_path)],
        env=trainer_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, **kw)  # own process group: kill -9 reaches every child


def _write_config(tmp_path: Path, config) -> Path:
    path = tmp_path / "trainer.yaml"
    path.write_text(config.dump_yaml())
    return path


def test_bad_jsonl_line_is_one_line_with_file_and_line(tmp_path):
    rows = chat_rows(3)
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, '{"messages": [{"role": "user", "content": "unterminated"}')
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    config_path = _write_config(tmp_path, tiny_config(tmp_path))
    proc = _start(config_path)
    _, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 2
    errors = [line for line in stderr.splitlines() if line.startswith("finetune-trainer:")]
    # The row stops short at the line's end: maybe the rest is on the next line.
    expected = (f"finetune-trainer: error: {tmp_path / 'train.jsonl'}:3: invalid JSON "
                "(Expecting ',' delimiter at column 58); the line holds part of a row (a "
                ".jsonl row must be on one line) (set dataset.onError: skip to skip bad "
                "rows)")
    assert errors == [expected]
    assert "Traceback" not in stderr


def test_bad_config_is_one_line(tmp_path):
    path = tmp_path / "trainer.yaml"
    path.write_text("name: x\nspec: [\n")
    proc = _start(path)
    _, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip().startswith(f"finetune-trainer: error: {path}:")


def test_a_rank_leaves_with_its_exit_code_and_its_buffered_output():
    # leave() skips the interpreter's teardown (os._exit): what print and logging buffered
    # on a pipe must still come out
    code = ("import logging, sys; from finetune_trainer.__main__ import leave; "
            "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(message)s'); "
            "print('buffered', end=' '); logging.info('logged'); leave(3)")
    env = {k: v for k, v in trainer_env().items() if k != "PYTHONUNBUFFERED"}  # buffered
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False,
                          text=True, timeout=DEADLINE)
    assert proc.returncode == 3
    assert proc.stdout.split() == ["buffered", "logged"]


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            return response.read().decode()
    except OSError:
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=DEADLINE)


def test_metrics_move_while_training_then_kill_9_and_resume(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(64))
    port = free_port()
    steps = 400
    spec = tiny_spec(training={"maxSteps": steps, "saveSteps": 25, "saveTotalLimit": 2})
    config = tiny_config(tmp_path, spec=spec, metrics_port=port)
    config_path = _write_config(tmp_path, config)
    output = tmp_path / "out"

    proc = _start(config_path)
    seen: list = []
    texts: list[str] = []
    start = time.monotonic()
    try:
        # Scrape until two distinct steps with a loss were seen and a checkpoint is complete.
        while time.monotonic() - start < DEADLINE and proc.poll() is None:
            text = _scrape(port)
            if text:
                progress = parse_progress(text)
                if progress.step and progress.loss is not None:
                    seen.append(progress)
                    texts.append(text)
            moving = len({p.step for p in seen}) >= 2
            if moving and checkpoints.latest_complete(output):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
    finally:
        if proc.poll() is None:
            _kill_group(proc)

    # The endpoint showed a moving step and loss, with the labels the operator expects.
    assert len({p.step for p in seen}) >= 2
    assert seen[-1].step > seen[0].step and seen[0].total_steps == steps
    assert len({p.loss for p in seen}) >= 2
    families = {f.name: f for f in text_string_to_metric_families(texts[-1])}
    assert set(GAUGES) <= set(families)
    sample = families["finetune_train_loss"].samples[0]
    assert sample.labels == {"namespace": "test", "finetunejob": "tiny", "rank": "0"}
    assert families["finetune_train_tokens_per_second"].samples[0].value > 0
    assert 0 < families["finetune_train_mfu"].samples[0].value < 1
    assert families["finetune_train_peak_memory_bytes"].samples[0].value > 100 * 2**20

    # A kill at an arbitrary point: the newest complete checkpoint survives; fake a newer,
    # half-written one (no marker) as a kill during saving would leave it.
    latest = checkpoints.latest_complete(output)
    half = output / f"checkpoint-{checkpoints.step_of(latest) + 1}"
    shutil.copytree(latest, half)
    (half / checkpoints.MARKER).unlink()
    (half / "optimizer.pt").write_bytes(b"truncated")
    assert not (output / SUMMARY_FILE).exists()

    proc = _start(config_path)
    stdout, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"removed {half.name}: its save was cut short (no COMPLETE marker)" in stdout
    assert f"resuming from {latest.name} at step {checkpoints.step_of(latest)}" in stdout
    summary = json.loads((output / SUMMARY_FILE).read_text())
    resumed_step = checkpoints.step_of(Path(summary["resumedFrom"]))
    assert summary["resumedFrom"] == str(latest) and resumed_step > 0
    assert summary["steps"] == steps  # ends at the same final step
    assert [p["step"] for p in summary["lossCurve"]] == list(range(1, steps + 1))
    assert not half.exists()
    assert len(checkpoints.complete_checkpoints(output)) == 2  # saveTotalLimit
