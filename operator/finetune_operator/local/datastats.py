"""A cheap look at local training data for the planner's time estimate.

Rows are counted exactly (non-empty JSONL lines); tokens per row are estimated from the text
of the first rows at about four characters per token, the usual figure for English with BPE
tokenizers. No tokenizer is loaded: this runs before training, in the process that must stay
free of torch, and only feeds an estimate. The trainer checks every row for real.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune_contract.api import DatasetSpec
from finetune_operator.planner import DatasetStats

CHARS_PER_TOKEN = 4.0
# Role marker, start and end of turn around every message of a chat template.
TEMPLATE_TOKENS_PER_MESSAGE = 4
SAMPLE_ROWS = 2000


def measure(dataset: DatasetSpec, data_root: Path) -> DatasetStats | None:
    """Stats of the training file, or None when it is not a local JSONL file."""
    path = dataset.train.path
    if not path or not path.endswith(".jsonl"):
        return None
    file = Path(path) if Path(path).is_absolute() else data_root / path
    try:
        rows, sample = _scan(file)
    except OSError:
        return None  # the trainer reports a missing file with its own message
    if dataset.eval_split_ratio:
        rows = round(rows * (1 - dataset.eval_split_ratio))
    estimates = [t for line in sample if (t := row_tokens(line, dataset.format)) is not None]
    mean = sum(estimates) / len(estimates) if estimates else None
    return DatasetStats(rows=rows, mean_tokens_per_row=mean)


def _scan(file: Path) -> tuple[int, list[str]]:
    rows, sample = 0, []
    with file.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            rows += 1
            if len(sample) < SAMPLE_ROWS:
                sample.append(line)
    return rows, sample


def json_object(line: str) -> dict | None:
    """One JSONL row as a mapping, or None when it is not one (the trainer reports why)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def row_tokens(line: str, data_format: str) -> float | None:
    """Estimated tokens of one JSONL row as the model sees it; None for an unusable row."""
    row = json_object(line)
    if row is None:
        return None
    if data_format == "messages":
        messages = row.get("messages")
        if not isinstance(messages, list):
            return None
        text = "".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        return len(text) / CHARS_PER_TOKEN + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
    if data_format == "prompt-completion":
        text = str(row.get("prompt", "")) + str(row.get("completion", ""))
    else:
        text = str(row.get("text", ""))
    return len(text) / CHARS_PER_TOKEN
