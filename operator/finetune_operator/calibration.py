"""Memory calibration: what finished runs measured against the planner's estimate, per model
family, strategy and GPU type, and the factor later plans of the same key scale theirs by.

The memory model (planner/memory.py) is derived from what each implementation keeps and
checked on tiny models; a real model on a real GPU can still peak above or below it (the
allocator's fragmentation, kernels' workspaces, a library version that saves more). Each job
that Succeeded with a memory reading (status.memory, memory_drift.py) says how far off the
estimate was for its key. The operator keeps the last RECENT ratios of each key in a
ConfigMap of its own namespace (names.CALIBRATION_CONFIG_MAP); `plan_job(calibration=...)`
multiplies the estimate of a layout whose key has runs by `factor`, and `finetune plan
--calibration FILE` does the same from a copy of that ConfigMap.

The ConfigMap's data has one key per (family, strategy, GPU), `Key.name`, whose value is
JSON (the value names the key in full; the name only has to be a valid ConfigMap key):

    llama.zero2.H100-80GB: '{"family": "llama", "strategy": "zero2", "gpu": "H100-80GB",
        "runs": 7, "recent": [{"uid": "…", "job": "team-a/chat", "ratio": 1.081}, …]}'

Pure: a table is a plain mapping of values. Parsing reports a bad entry as a problem naming
its key, never as an exception: one corrupt entry must not stop any plan.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from finetune_contract.api import MemoryCheck, Plan

# Ratios kept per key: enough that one lucky run does not set the factor alone, few enough
# that a change (a new trainer image, a new transformers) shows within a handful of jobs.
RECENT = 5
# The factor's range. Above 2: a run that peaked at over twice the estimate points to
# something a factor cannot fix (another process on the GPU, a model the planner misreads),
# and must not double every later plan; its PlanDrift condition says so instead. Below 0.8:
# a run under its estimate may not have met its worst case (sequences shorter than
# maxSeqLength under padding-free packing, no evaluation), and on GPUs the reading (memory
# allocated) leaves out the CUDA context and the allocator's cache, which the estimate counts:
# shrinking plans further could put the next job with longer data out of memory.
MIN_FACTOR, MAX_FACTOR = 0.8, 2.0
# A ConfigMap key: at most 253 characters of [-._a-zA-Z0-9].
KEY_MAX = 253
_NOT_IN_KEY = re.compile(r"[^-_A-Za-z0-9]")


class EntryError(ValueError):
    """One entry of the ConfigMap that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class Key:
    """What a calibration is kept for: runs of one model family, strategy and GPU type."""

    family: str
    strategy: str
    gpu: str

    @property
    def name(self) -> str:
        """The ConfigMap data key: `<family>.<strategy>.<gpu>`, each part with anything but
        letters, digits, '-' and '_' as '_' ('.' separates the parts); a name too long for
        a key is cut and ends with a digest of the whole, so that it stays one key's own."""
        text = ".".join(_NOT_IN_KEY.sub("_", part) or "_"
                        for part in (self.family, self.strategy, self.gpu))
        if len(text) <= KEY_MAX:
            return text
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return f"{text[:KEY_MAX - len(digest) - 1]}-{digest}"

    def describe(self) -> str:
        return f"{self.family}, {self.strategy} on {self.gpu}"


@dataclass(frozen=True)
class Run:
    """One finished job's reading: its largest measured peak over the planner's estimate."""

    uid: str  # the FineTuneJob's: a job is recorded once
    job: str  # namespace/name, for the people who read the ConfigMap
    ratio: float


@dataclass(frozen=True)
class Entry:
    """The recent runs of one key, oldest first, and how many were ever recorded."""

    key: Key
    runs: int
    recent: tuple[Run, ...]


@dataclass(frozen=True)
class Factor:
    """What a plan of one key is scaled by, and what it comes from."""

    key: Key
    value: float
    runs: int  # the recent runs it is taken from
    largest_ratio: float  # before the bounds


# The ConfigMap's entries by data key (Key.name).
Table = Mapping[str, Entry]
EMPTY: Table = {}


# --------------------------------------------------------------------------- the rules


def factor(table: Table, key: Key) -> Factor | None:
    """The factor for `key`: the largest ratio of its recent runs, within [MIN_FACTOR,
    MAX_FACTOR]; None when none is recorded.

    The largest, not the mean: a plan that is too small costs a job that runs out of memory
    and restarts, one that is a little too large only idle memory. With the mean, about one
    job in two would peak above its plan."""
    entry = table.get(key.name)
    if entry is None or entry.key != key or not entry.recent:
        return None
    largest = max(run.ratio for run in entry.recent)
    value = round(min(MAX_FACTOR, max(MIN_FACTOR, largest)), 3)
    return Factor(key=key, value=value, runs=len(entry.recent), largest_ratio=largest)


def record(table: Table, key: Key, run: Run) -> Table:
    """`table` with `run` recorded under `key` (the oldest run dropped past RECENT); the
    same table when that job is among the recent runs already: recording is idempotent."""
    entry = table.get(key.name)
    if entry is not None and entry.key != key:
        entry = None  # another key whose name reads the same: the newer one takes it over
    if entry is not None and any(r.uid == run.uid for r in entry.recent):
        return table
    recent = (*(entry.recent if entry else ()), run)[-RECENT:]
    runs = (entry.runs if entry else 0) + 1
    return {**table, key.name: Entry(key=key, runs=runs, recent=recent)}


def finished_run(plan: Plan, memory: MemoryCheck, *, uid: str, job: str,
                 ranks_readable: int) -> tuple[Key, Run] | None:
    """What a Succeeded job with the reading `memory` records, under which key; None when
    its reading cannot calibrate:

    - its plan was made without calibration (no key, no estimate to compare with);
    - the reading is of an earlier plan (a re-plan since, and no read under the new one);
    - fewer ranks answered than a read asks for (all, up to the lowest `ranks_readable`):
      the largest peak may be on a rank not read, and a lower bound must not lower the
      factor.

    The ratio is against the planner's own estimate (before the factor its plan applied),
    so that a calibrated plan that fits its run does not pull its key's factor back to 1."""
    calibrated = plan.calibration
    if calibrated is None or calibrated.estimated_bytes <= 0:
        return None
    if memory.planned_bytes != plan.memory_per_gpu.total or memory.ranks_read < ranks_readable:
        return None
    key = Key(calibrated.model_family, plan.strategy, plan.gpu)
    ratio = round(memory.measured_bytes / calibrated.estimated_bytes, 3)
    return key, Run(uid=uid, job=job, ratio=ratio)


# --------------------------------------------------------------------------- the ConfigMap


def parse(data: Mapping[str, Any] | None) -> tuple[Table, list[str]]:
    """The table in a ConfigMap's `data`, and one problem per entry left out (naming its key
    and what to do). Never raises: the entries that read well are kept."""
    table: dict[str, Entry] = {}
    problems: list[str] = []
    for name, text in sorted((data or {}).items(), key=lambda item: str(item[0])):
        try:
            entry = parse_entry(text)
        except EntryError as err:
            problems.append(f"entry {str(name)[:KEY_MAX]!r}: {err}; fix it, or delete the "
                            "entry (its next run starts it afresh)")
            continue
        if entry.key.name != name:
            problems.append(f"entry {str(name)[:KEY_MAX]!r}: holds the runs of "
                            f"{entry.key.describe()}, whose key is {entry.key.name!r}: "
                            "rename it, or delete it")
            continue
        table[name] = entry
    return table, problems


def parse_entry(text: Any) -> Entry:
    """One ConfigMap value; EntryError says what is wrong with it."""
    if not isinstance(text, str):
        raise EntryError("must be a JSON object in a string")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise EntryError(f"is not valid JSON ({str(err)[:120]})") from None
    if not isinstance(value, dict):
        raise EntryError("must be a JSON object with family, strategy, gpu, runs and recent")
    key = Key(*(_text(value, part) for part in ("family", "strategy", "gpu")))
    recent = value.get("recent")
    if not isinstance(recent, list):
        raise EntryError("recent must be a list of {uid, job, ratio}")
    runs_read = tuple(_run(item, i) for i, item in enumerate(recent))[-RECENT:]
    runs = value.get("runs")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < len(runs_read):
        raise EntryError(f"runs must be a whole number of at least the {len(runs_read)} "
                         "recent run(s)")
    return Entry(key=key, runs=runs, recent=runs_read)


def dump(table: Table) -> dict[str, str]:
    """The table as a ConfigMap's `data`."""
    return {name: dump_entry(entry) for name, entry in sorted(table.items())}


def dump_entry(entry: Entry) -> str:
    return json.dumps({
        "family": entry.key.family, "strategy": entry.key.strategy, "gpu": entry.key.gpu,
        "runs": entry.runs,
        "recent": [{"uid": r.uid, "job": r.job, "ratio": r.ratio} for r in entry.recent],
    })


def _text(value: dict[str, Any], field: str) -> str:
    text = value.get(field)
    if not isinstance(text, str) or not text:
        raise EntryError(f"{field} must be a non-empty string")
    return text


def _run(item: Any, index: int) -> Run:
    if not isinstance(item, dict):
        raise EntryError(f"recent[{index}] must be an object {{uid, job, ratio}}")
    uid, job, ratio = item.get("uid"), item.get("job", ""), item.get("ratio")
    if not isinstance(uid, str) or not uid:
        raise EntryError(f"recent[{index}].uid must be the job's uid (a non-empty string)")
    if not isinstance(job, str):
        raise EntryError(f"recent[{index}].job must be a string (namespace/name)")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
            or not math.isfinite(ratio) or ratio <= 0:
        raise EntryError(f"recent[{index}].ratio must be a positive number (measured over "
                         "estimated peak)")
    return Run(uid=uid, job=job, ratio=float(ratio))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
