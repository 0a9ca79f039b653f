"""A cheap look at local training data for the planner's time estimate.

Rows are counted exactly (non-blank JSONL lines, as the trainer counts them); tokens per row are estimated from the text
of the first rows at about four characters per token, the usual figure for English with BPE
tokenizers. No tokenizer is loaded: this runs before training, in the process that must stay
free of torch, and only feeds an estimate. The trainer checks every row for real.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune_contract.api import DatasetSpec
from finetune_contract.datarows import RowError, jsonl_lines, parse_row
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
        rows, estimates = _scan(file, dataset.format)
    except OSError:
        return None  # the trainer reports a missing file with its own message
    if dataset.eval_split_ratio:
        rows = round(rows * (1 - dataset.eval_split_ratio))
    mean = sum(estimates) / len(estimates) if estimates else None
    return DatasetStats(rows=rows, mean_tokens_per_row=mean)


def _scan(file: Path, data_format: str) -> tuple[int, list[float]]:
    """Rows as the trainer counts them (lines that are not blank), and the token estimates
    of the first SAMPLE_ROWS of them; one line in memory at a time, each at most
    datarows.MAX_ROW_BYTES."""
    rows, estimates = 0, []
    with file.open("rb") as lines:
        for _, raw in jsonl_lines(lines):
            rows += 1
            if rows <= SAMPLE_ROWS and raw is not None:
                tokens = row_tokens(raw.decode("utf-8", errors="replace"), data_format)
                if tokens is not None:
                    estimates.append(tokens)
    return rows, estimates


def json_object(line: str) -> dict | None:
    """One JSONL row as a mapping, or None when the trainer would not take it as one (it
    reports why); by the trainer's own row rules, so no hostile row can raise here."""
    try:
        row = parse_row(line.rstrip("\r\n"))
    except (json.JSONDecodeError, RowError):
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
