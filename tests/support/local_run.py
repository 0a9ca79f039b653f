"""A shortened tiny-chat job for the end-to-end tests: same model and data format as the demo,
a slice of its data copied next to the YAML (paths in the YAML are relative to it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "tiny-chat.yaml"
# The `finetune` console script, run with this interpreter.
ENTRY_POINT = "import sys; from finetune_operator.cli import main; sys.exit(main())"
FINETUNE = [sys.executable, "-c", ENTRY_POINT]
TRAIN_ROWS = 800
EVAL_ROWS = 40


def write_job(folder: Path, *, max_steps: int, save_steps: int, name: str = "tiny-e2e",
              train_lines: list[str] | None = None) -> Path:
    """A copy of the demo job limited to `max_steps`, with its data under `folder/data`."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    source = ROOT / "examples" / "data"
    train = train_lines or (source / "train.jsonl").read_text().splitlines()[:TRAIN_ROWS]
    (data / "train.jsonl").write_text("\n".join(train) + "\n")
    evals = (source / "eval.jsonl").read_text().splitlines()[:EVAL_ROWS]
    (data / "eval.jsonl").write_text("\n".join(evals) + "\n")
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["training"].update(maxSteps=max_steps, saveSteps=save_steps,
                                   evalSteps=save_steps, globalBatchSize=16)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def finetune_command(job: Path, output: Path, *extra: str) -> list[str]:
    return [*FINETUNE, "run", str(job), "--local", "--nproc", "2", "--output", str(output),
            *extra]


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def trainer_processes(marker: str) -> list[int]:
    """Live processes whose command line mentions `marker` (the run's config path)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker in text and state != "Z":
            found.append(int(cmdline.parent.name))
    return found
