"""The sample answer at the end of a local run: a prompt from the eval data, the model's reply.

Choosing the prompt is pure; generating runs `finetune_operator.local.generate` in a child
Python (the one that has torch), so this module never imports torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from finetune_contract.api import DatasetSpec
from finetune_contract.datarows import read_jsonl
from finetune_operator.local.datastats import json_object

GENERATE_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class SamplePrompt:
    """A conversation to continue, and the answer the data holds for it."""

    messages: list[dict[str, str]]
    expected: str | None
    source: str  # file:line it came from

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]


def sample_prompt(dataset: DatasetSpec, data_root: Path) -> SamplePrompt | None:
    """The first usable row of the eval file (else the training file); None for `text`,
    `classification` and Hugging Face datasets, which have no prompt to answer locally."""
    if dataset.format not in ("messages", "prompt-completion"):
        return None
    source = dataset.eval if dataset.eval and dataset.eval.path else dataset.train
    if not source.path or not source.path.endswith(".jsonl"):
        return None
    path = Path(source.path)
    path = path if path.is_absolute() else data_root / path
    try:
        # by the trainer's row rules: a row it would refuse (encoding, length, depth, a string
        # no tokenizer encodes) is passed over
        with path.open("rb") as rows:
            for number, record in read_jsonl(rows):
                prompt = prompt_from_record(record, dataset.format, f"{path}:{number}")
                if prompt:
                    return prompt
    except OSError:
        return None
    return None


def prompt_from_row(line: str, data_format: str, where: str) -> SamplePrompt | None:
    """The prompt part of one JSONL line: every message before the last assistant turn."""
    return prompt_from_record(json_object(line), data_format, where)


def prompt_from_record(row: object, data_format: str, where: str) -> SamplePrompt | None:
    """The prompt part of one parsed row; None for anything but a usable object."""
    if not isinstance(row, dict):
        return None
    if data_format == "prompt-completion":
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, str) and prompt:
            expected = completion if isinstance(completion, str) else None
            return SamplePrompt([{"role": "user", "content": prompt}], expected, where)
        return None
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant" and len(messages) > 1:
        return SamplePrompt(messages[:-1], last.get("content"), where)
    if isinstance(last, dict) and last.get("role") == "user":
        return SamplePrompt(messages, None, where)
    return None


class AnswerError(Exception):
    """The trained model could not produce an answer; the message says why."""


def generate_answer(model_dir: Path, prompt: SamplePrompt, env: dict[str, str] | None = None,
                    python: str = sys.executable) -> str:
    """Generate with the trained model in a child process (one thread, greedy)."""
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("OMP_NUM_THREADS", "1")
    try:
        result = subprocess.run(
            [python, "-m", "finetune_operator.local.generate", "--model", str(model_dir)],
            input=json.dumps(prompt.messages),
            capture_output=True,
            text=True,
            env=child_env,
            timeout=GENERATE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AnswerError(f"no answer within {GENERATE_TIMEOUT_SECONDS} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise AnswerError(f"generation failed: {last}")
    try:
        return str(json.loads(result.stdout)["answer"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise AnswerError(f"generation printed no answer: {result.stdout[-200:]!r}") from None
