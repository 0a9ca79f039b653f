"""`finetune run --local` end to end: real TRL training on 2 gloo ranks through the CLI.

One shortened tiny-chat job is interrupted with Ctrl-C after its first periodic checkpoint:
the ranks take the preemption path (a complete checkpoint at the step they stopped, said in
one line). Run again with the same command, it must resume from that checkpoint (not start
over) and say so, finish,
write its summary with a falling loss, and leave a model that loads back with its chat
template. Bad input must end with a one-line reason and no traceback.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.support.local_run import finetune_command, run_cli, trainer_processes, write_job

MAX_STEPS = 60
SAVE_STEPS = 20
CHECKPOINT_WAIT_SECONDS = 240


def _wait_for_complete_checkpoint(output: Path, process: subprocess.Popen) -> Path:
    deadline = time.monotonic() + CHECKPOINT_WAIT_SECONDS
    while time.monotonic() < deadline:
        done = sorted(output.glob("checkpoint-*/COMPLETE"))
        if done:
            return done[0].parent
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"no complete checkpoint appeared; log: {(output / 'train.log').read_text()}")


@pytest.mark.slow
@pytest.mark.distributed
def test_interrupted_run_resumes_and_finishes(tmp_path: Path):
    job = write_job(tmp_path / "job", max_steps=MAX_STEPS, save_steps=SAVE_STEPS)
    output = tmp_path / "out"
    command = finetune_command(job, output)

    # 1. Ctrl-C after the first complete checkpoint: every rank checkpoints and stops.
    first_log = (tmp_path / "first.out").open("w")
    # SIGINT as a terminal's Ctrl-C delivers it: a test run in the background (CI) would
    # pass it on ignored, and Python would raise no KeyboardInterrupt.
    first = subprocess.Popen(command, cwd=tmp_path, stdout=first_log,
                             stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    checkpoint = _wait_for_complete_checkpoint(output, first)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 130
    first_out = (tmp_path / "first.out").read_text()
    said = re.search(r"stopped: SIGINT: (wrote|kept) the complete checkpoint "
                     r"(checkpoint-(\d+)) at step (\d+)", first_out)
    assert said, first_out
    assert said.group(3) == said.group(4)
    stopped_at = int(said.group(4))
    assert stopped_at >= int(checkpoint.name.split("-")[1])
    assert f"run the same command again to resume from {said.group(2)}" in first_out
    assert trainer_processes(str(output / "trainer-config.yaml")) == []
    assert not (output / "training_summary.json").exists()

    # 2. The same command again resumes from the checkpoint of the stop, and finishes.
    newest = max(output.glob("checkpoint-*/COMPLETE"), key=lambda p: int(
        p.parent.name.split("-")[1])).parent
    assert newest.name == said.group(2)
    second = run_cli(command, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming from {newest}" in second.stdout

    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["resumedFrom"] == str(newest)
    assert summary["steps"] == MAX_STEPS
    assert summary["strategy"]["worldSize"] == 2
    steps_trained_now = [p["step"] for p in summary["lossCurve"]
                         if p["step"] > int(newest.name.split("-")[1])]
    assert steps_trained_now, "the second run trained no steps of its own"
    # Single-step losses are noisy (16 short chats a step): judge the end by its last 5 steps.
    tail = [p["loss"] for p in summary["lossCurve"][-5:]]
    assert sum(tail) / len(tail) <= 0.5 * summary["firstLoss"], summary["lossCurve"]
    assert summary["evalLoss"] is not None
    # Where rank 0's time went in this run: the parts fit in its wall time, and it saved.
    time = summary["time"]
    parts = [time[f"{p}Seconds"] for p in ("startup", "steps", "eval", "checkpoint")]
    assert all(part > 0 for part in parts), time
    assert sum(parts) <= time["wallSeconds"]
    assert time["goodput"] == pytest.approx(time["stepsSeconds"] / time["wallSeconds"])
    assert "goodput:    " in second.stdout
    assert f"curves:     {output / 'training_curves.png'}" in second.stdout

    # What the user reads at the end: the summary and one answer of the trained model.
    assert "loss:" in second.stdout and "eval loss:" in second.stdout
    assert f"model:      {output / 'final'}" in second.stdout
    assert "  model:     " in second.stdout and "  reference: " in second.stdout
    _assert_model_loads_with_its_chat_template(output / "final")


def _assert_model_loads_with_its_chat_template(final: Path) -> None:
    import torch
    from finetune_trainer.tokenizer import CHATML_TEMPLATE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    assert tokenizer.chat_template == CHATML_TEMPLATE  # the template used in training
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == model.config.vocab_size >= len(tokenizer)
    assert torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.distributed
def test_bad_row_fails_with_file_and_line(tmp_path: Path):
    rows = (ROOT / "examples" / "data" / "train.jsonl")
    lines = rows.read_text().splitlines()[:100]
    lines[4] = '{"messages": [{"role": "user", "content": "hi"}]'  # truncated JSON
    job = write_job(tmp_path / "job", max_steps=5, save_steps=5, train_lines=lines)
    result = run_cli(finetune_command(job, tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1
    assert "training failed: " in result.stderr
    assert "train.jsonl:5" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"full log: {tmp_path / 'out' / 'train.log'}" in result.stderr


def test_invalid_job_names_the_field_and_starts_nothing(tmp_path: Path):
    job = write_job(tmp_path / "job", max_steps=5, save_steps=5)
    doc = yaml.safe_load(job.read_text())
    doc["spec"]["training"]["learningRate"] = -1
    job.write_text(yaml.safe_dump(doc))
    result = run_cli(finetune_command(job, tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1
    assert "spec.training.learningRate: must be > 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing was written or started


def test_missing_file_is_a_one_line_error(tmp_path: Path):
    result = run_cli(finetune_command(tmp_path / "nope.yaml", tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"finetune run: {tmp_path / 'nope.yaml'}: no such file"
