"""Reading, checking, de-duplicating, splitting and mixing the training rows.

Every row is checked against the dataset format before any tokenizer sees it. A bad row either
stops the run with `file:line: problem` (onError: fail) or is skipped and counted under its
reason (onError: skip); no row ever disappears without being counted. Nothing here imports
torch: these are plain functions of rows, tested on their own.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_contract.api import DatasetSpec, DataSource
from finetune_contract.datarows import Unreadable, read_jsonl

from finetune_trainer.errors import TrainerError
from finetune_trainer.json_array import read_json_array

ROLES = ("system", "user", "assistant")
# The columns each format keeps; everything else in a row is ignored.
COLUMNS = {
    "messages": ("messages",),
    "prompt-completion": ("prompt", "completion"),
    "text": ("text",),
    "classification": ("text", "label"),
}
MAX_EXAMPLES = 20  # skipped rows listed one by one in the summary; the rest only counted


@dataclass(frozen=True)
class Row:
    """One checked row, reduced to its format's columns, with where it came from."""

    data: dict[str, Any]
    origin: str  # "file:line", "file: row N" or "hf:name[split] row N"


@dataclass
class DataReport:
    """What happened to the rows; becomes part of training_summary.json."""

    read: Counter[str] = field(default_factory=Counter)  # source -> rows read
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    skipped_examples: list[str] = field(default_factory=list)  # "origin: reason"
    duplicates: int = 0
    mixed: Counter[str] = field(default_factory=Counter)  # mix source -> rows drawn
    train_rows: int = 0
    eval_rows: int = 0

    def skip(self, origin: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.skipped_examples) < MAX_EXAMPLES:
            self.skipped_examples.append(f"{origin}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": dict(self.read),
            "skipped": dict(self.skipped),
            "skippedTotal": sum(self.skipped.values()),
            "skippedExamples": list(self.skipped_examples),
            "duplicatesDropped": self.duplicates,
            "mixed": dict(self.mixed),
            "trainRows": self.train_rows,
            "evalRows": self.eval_rows,
        }


@dataclass
class PreparedData:
    train: list[Row]
    eval: list[Row]
    report: DataReport


# --------------------------------------------------------------------------- reading


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(origin, parsed object) for every record of a local file; a record that cannot be
    read becomes (origin, Unreadable(reason)) so the caller applies onError to it like any
    bad row."""
    if not path.is_file():
        raise TrainerError(f"{path}: dataset file not found (paths resolve against the data root)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from read_json_array(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise TrainerError(f"{path}: unsupported dataset file type {suffix!r}; use .jsonl, .json "
                           "or .parquet")


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    # Read line by line (datarows): a line in another encoding, too long or too deep is a bad
    # row at its own line.
    with path.open("rb") as lines:
        for number, record in read_jsonl(lines):
            yield f"{path}:{number}", record


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq  # only needed for parquet; ships with datasets

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # ArrowInvalid is a ValueError
        raise TrainerError(f"{path}: cannot read parquet ({err})") from None
    number = 0
    for batch in table.to_batches():  # a batch at a time: the table is not copied whole
        for record in _batch_records(batch):
            number += 1
            yield f"{path}: row {number}", record


def _batch_records(batch: Any) -> list[Any]:
    """The rows of a record batch. Parquet does not check that a string column holds UTF-8;
    converting such a value raises, so that batch is converted row by row and the bad rows
    become Unreadable."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        return [_one_record(batch.slice(i, 1)) for i in range(batch.num_rows)]


def _one_record(row: Any) -> Any:
    try:
        return row.to_pylist()[0]
    except UnicodeDecodeError as err:
        return Unreadable(f"not UTF-8 text ({err.reason} in a string column)")


def read_hf(source: DataSource, field: str = "dataset.train") -> Iterator[tuple[str, Any]]:
    """Rows of a Hugging Face dataset (needs network; the token comes from HF_TOKEN), the
    source at `field` (dataset.train, dataset.eval, dataset.mix[i])."""
    import datasets

    from finetune_trainer.hub_errors import hub_error

    try:
        dataset = datasets.load_dataset(source.hf, split=source.split)
    except Exception as err:  # noqa: BLE001 (hub and builder errors have no common base)
        raise hub_error(err, field=f"{field}.hf", kind="dataset", repo=str(source.hf),
                        split_field=f"{field}.split") from None
    for number, record in enumerate(dataset, start=1):
        yield f"hf:{source.hf}[{source.split}] row {number}", record


# --------------------------------------------------------------------------- checking


def check_row(record: Any, fmt: str, *, num_labels: int | None = None,
              assistant_only_loss: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """(the row reduced to its format's columns, None) or (None, problem)."""
    if isinstance(record, Unreadable):
        return None, record.reason
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    missing = [c for c in COLUMNS[fmt] if c not in record or record[c] is None]
    if missing:
        return None, f"missing field {missing[0]!r} (format {fmt} needs " + \
            ", ".join(COLUMNS[fmt]) + ")"
    problem = _FORMAT_CHECKS[fmt](record, num_labels=num_labels,
                                  assistant_only_loss=assistant_only_loss)
    if problem:
        return None, problem
    if fmt == "messages":
        return {"messages": [{"role": m["role"], "content": m["content"]}
                             for m in record["messages"]]}, None
    return {c: record[c] for c in COLUMNS[fmt]}, None


def _check_messages(record: dict, *, assistant_only_loss: bool, **_: Any) -> str | None:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list of {role, content}"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{i}] must be an object with role and content"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"messages[{i}].role must be one of {', '.join(ROLES)} (got {role!r})"
        if not isinstance(content, str):
            return f"messages[{i}].content must be a string"
    if assistant_only_loss and not any(
        m["role"] == "assistant" and m["content"].strip() for m in messages
    ):
        return "no non-empty assistant message (assistant-only loss would train on nothing)"
    return None


def _check_prompt_completion(record: dict, **_: Any) -> str | None:
    for key in ("prompt", "completion"):
        if not isinstance(record[key], str):
            return f"{key} must be a string"
    if not record["completion"].strip():
        return "completion is empty (the loss is computed on the completion only)"
    return None


def _check_text(record: dict, **_: Any) -> str | None:
    if not isinstance(record["text"], str) or not record["text"].strip():
        return "text must be a non-empty string"
    return None


def _check_classification(record: dict, *, num_labels: int | None, **_: Any) -> str | None:
    problem = _check_text(record)
    if problem:
        return problem
    label = record["label"]
    if isinstance(label, bool) or not isinstance(label, int):
        return f"label must be an integer class id (got {label!r})"
    if num_labels is not None and not 0 <= label < num_labels:
        return f"label {label} is outside 0..{num_labels - 1} (method.numLabels is {num_labels})"
    return None


_FORMAT_CHECKS = {
    "messages": _check_messages,
    "prompt-completion": _check_prompt_completion,
    "text": _check_text,
    "classification": _check_classification,
}


def load_rows(records: Iterator[tuple[str, Any]], *, fmt: str, on_error: str,
              report: DataReport, source_name: str, num_labels: int | None = None,
              assistant_only_loss: bool = True) -> list[Row]:
    """Check every record; fail at the first bad one or skip and count it."""
    rows: list[Row] = []
    for origin, record in records:
        report.read[source_name] += 1
        data, problem = check_row(record, fmt, num_labels=num_labels,
                                  assistant_only_loss=assistant_only_loss)
        if problem is None:
            rows.append(Row(data, origin))
        elif on_error == "fail":
            raise TrainerError(f"{origin}: {problem} (set dataset.onError: skip to skip bad rows)")
        else:
            report.skip(origin, problem)
    return rows


# --------------------------------------------------------------------------- shaping


def dedupe(rows: list[Row]) -> tuple[list[Row], int]:
    """Drop exact duplicates (same content after reduction to the format's columns); the
    first occurrence stays. Returns the rows and how many were dropped."""
    seen: set[str] = set()
    kept: list[Row] = []
    for row in rows:
        key = json.dumps(row.data, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def split_eval(rows: list[Row], ratio: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Hold out `ratio` of the rows (at least one, never all) for evaluation."""
    if len(rows) < 2:
        raise TrainerError(f"dataset.evalSplitRatio: only {len(rows)} usable training row(s); "
                           "need at least 2 to hold some out")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * ratio)))
    held = set(order[:n_eval])
    return ([r for i, r in enumerate(rows) if i not in held],
            [r for i, r in enumerate(rows) if i in held])


def mix_counts(n_train: int, weights: list[float]) -> list[int]:
    """Rows to draw from each mix source so that source i makes up weights[i] of the mixed
    training set and dataset.train the rest: n_i = n_train * w_i / (1 - sum(w))."""
    total_weight = sum(weights)
    if total_weight >= 1:
        raise TrainerError(f"dataset.mix: weights sum to {total_weight:g}; they must sum to less "
                           "than 1 (the remainder is dataset.train's share)")
    mixed_total = n_train / (1 - total_weight)
    return [round(mixed_total * w) for w in weights]


def draw(rows: list[Row], count: int, rng: random.Random) -> list[Row]:
    """`count` rows from `rows`: without replacement while they last, then another shuffled
    pass (so a small general set is repeated rather than under-weighted)."""
    if not rows:
        return []
    drawn: list[Row] = []
    while len(drawn) < count:
        batch = rows[:]
        rng.shuffle(batch)
        drawn.extend(batch[: count - len(drawn)])
    return drawn


def mix(train: list[Row], sources: list[tuple[str, list[Row], float]], seed: int,
        report: DataReport) -> list[Row]:
    """Training rows plus each mix source at its weight, shuffled together."""
    if not sources:
        return train
    rng = random.Random(seed)
    counts = mix_counts(len(train), [weight for _, _, weight in sources])
    mixed = list(train)
    for (name, rows, _), count in zip(sources, counts, strict=True):
        picked = draw(rows, count, rng)
        report.mixed[name] = len(picked)
        mixed.extend(picked)
    rng.shuffle(mixed)
    return mixed


# --------------------------------------------------------------------------- pipeline


def source_name(source: DataSource) -> str:
    return source.path or f"hf:{source.hf}"


def prepare(dataset: DatasetSpec, *, resolve, num_labels: int | None, assistant_only_loss: bool,
            seed: int) -> PreparedData:
    """Read, check, dedupe, split and mix everything the spec names."""
    report = DataReport()

    def load(source: DataSource, field: str) -> list[Row]:
        records = read_hf(source, field) if source.hf else read_records(resolve(source.path))
        rows = load_rows(records, fmt=dataset.format, on_error=dataset.on_error, report=report,
                         source_name=source_name(source), num_labels=num_labels,
                         assistant_only_loss=assistant_only_loss)
        if dataset.dedupe:
            rows, dropped = dedupe(rows)
            report.duplicates += dropped
        return rows

    train = load(dataset.train, "dataset.train")
    if dataset.eval is not None:
        eval_rows = load(dataset.eval, "dataset.eval")
    elif dataset.eval_split_ratio:
        train, eval_rows = split_eval(train, dataset.eval_split_ratio, seed)
    else:
        eval_rows = []
    mix_sources = []
    for i, source in enumerate(dataset.mix):
        if source.weight is None:
            raise TrainerError(f"dataset.mix[{i}].weight: required (the fraction of training "
                               "rows drawn from this source)")
        mix_sources.append((source_name(source), load(source, f"dataset.mix[{i}]"),
                            source.weight))
    train = mix(train, mix_sources, seed, report)
    if not train:
        raise TrainerError(f"dataset.train ({source_name(dataset.train)}): no usable rows "
                           f"(skipped: {dict(report.skipped) or 'none'})")
    report.train_rows, report.eval_rows = len(train), len(eval_rows)
    return PreparedData(train, eval_rows, report)
