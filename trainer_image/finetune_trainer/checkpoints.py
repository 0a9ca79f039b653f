"""Checkpoints that are either complete or ignored.

transformers writes `checkpoint-N/` file by file, and with DeepSpeed every rank writes its own
shards. A kill at any moment may leave a half-written directory. So a checkpoint only counts
once every rank has finished writing and rank 0 has written the marker file `COMPLETE` into
it, last. On start the trainer resumes from the newest complete checkpoint and deletes the
incomplete ones; rotation to saveTotalLimit only ever counts complete ones and never removes
the best checkpoint (early stopping keeps it).

The marker also records how many ranks wrote the checkpoint (`worldSize`): a DeepSpeed ZeRO
checkpoint is sharded per rank, and resuming it on another number of ranks needs a conversion
first (reshard.py). A marker written before that field existed reads as "unknown".
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

PREFIX = "checkpoint-"
MARKER = "COMPLETE"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


def step_of(path: Path) -> int | None:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else None


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{PREFIX}{step}"


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def checkpoints(output_dir: Path) -> list[Path]:
    """Every checkpoint directory, oldest step first, complete or not."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def complete_checkpoints(output_dir: Path) -> list[Path]:
    return [p for p in checkpoints(output_dir) if is_complete(p)]


def latest_complete(output_dir: Path) -> Path | None:
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def resume_message(resume: Path | None) -> str:
    """Where a run starts, as rank 0 says it in the log."""
    if resume is None:
        return "starting at step 0: no complete checkpoint"
    return f"resuming from {resume.name} at step {step_of(resume)}"


def remove_incomplete(output_dir: Path) -> list[Path]:
    """Delete half-written checkpoints (rank 0 only); returns what was removed."""
    removed = [p for p in checkpoints(output_dir) if not is_complete(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def mark_complete(path: Path, step: int, world_size: int) -> None:
    """Write the marker last, atomically: a marker is either absent or whole. It records the
    step and the number of ranks that wrote the checkpoint."""
    tmp = path / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({"step": step, "worldSize": world_size}) + "\n")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path / MARKER)


def written_world_size(path: Path) -> int | None:
    """How many ranks wrote the complete checkpoint `path`; None when its marker does not say
    (written before markers recorded it) or cannot be read: treated as unknown, never as a
    reason to convert."""
    try:
        value = json.loads((path / MARKER).read_text()).get("worldSize")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def rotate(output_dir: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond `keep`, sparing `protect` (the best
    checkpoint); returns what was removed."""
    done = complete_checkpoints(output_dir)
    protected = protect.resolve() if protect else None
    removable = [p for p in done if p.resolve() != protected]
    excess = len(done) - keep
    removed = removable[:max(0, excess)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
