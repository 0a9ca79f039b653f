"""Only complete checkpoints count: found, resumed, rotated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_trainer import checkpoints


def _checkpoint(root: Path, step: int, complete: bool) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x" * 10)
    if complete:
        checkpoints.mark_complete(path, step, world_size=2)
    return path


def test_latest_complete_skips_a_newer_half_written_one(tmp_path):
    _checkpoint(tmp_path, 5, True)
    done = _checkpoint(tmp_path, 10, True)
    _checkpoint(tmp_path, 15, False)
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    assert checkpoints.latest_complete(tmp_path) == done


def test_steps_sort_numerically(tmp_path):
    _checkpoint(tmp_path, 9, True)
    late = _checkpoint(tmp_path, 10, True)
    assert checkpoints.latest_complete(tmp_path) == late


def test_remove_incomplete(tmp_path):
    keep = _checkpoint(tmp_path, 5, True)
    half = _checkpoint(tmp_path, 10, False)
    assert checkpoints.remove_incomplete(tmp_path) == [half]
    assert keep.exists() and not half.exists()


def test_nothing_to_resume(tmp_path):
    assert checkpoints.latest_complete(tmp_path / "missing") is None
    _checkpoint(tmp_path, 3, False)
    assert checkpoints.latest_complete(tmp_path) is None


def test_rotation_keeps_the_newest_and_the_best(tmp_path):
    paths = [_checkpoint(tmp_path, s, True) for s in (10, 20, 30, 40)]
    half = _checkpoint(tmp_path, 50, False)
    removed = checkpoints.rotate(tmp_path, keep=2, protect=paths[0])
    assert removed == [paths[1], paths[2]]
    assert [p.name for p in checkpoints.checkpoints(tmp_path)] == \
        ["checkpoint-10", "checkpoint-40", "checkpoint-50"]
    assert half.exists()  # rotation never touches incomplete ones


def test_marker_records_the_step_and_the_world_size(tmp_path):
    path = _checkpoint(tmp_path, 7, True)
    assert json.loads((path / checkpoints.MARKER).read_text()) == {"step": 7, "worldSize": 2}
    assert not list(path.glob(".*tmp"))
    assert checkpoints.written_world_size(path) == 2


@pytest.mark.parametrize("marker", ['{"step": 7}\n', '{"step": 7, "worldSize": 0}',
                                    '{"step": 7, "worldSize": "2"}', '{"step": 7, "worldSize": true}',
                                    "[7]", "not json"])
def test_a_marker_without_a_usable_world_size_reads_as_unknown(tmp_path, marker):
    """Markers written before worldSize existed (and odd ones) say nothing about the ranks."""
    path = _checkpoint(tmp_path, 7, False)
    (path / checkpoints.MARKER).write_text(marker)
    assert checkpoints.is_complete(path)
    assert checkpoints.written_world_size(path) is None


def test_a_checkpoint_without_a_marker_has_no_world_size(tmp_path):
    assert checkpoints.written_world_size(_checkpoint(tmp_path, 3, False)) is None


def test_the_resume_message_names_the_checkpoint_and_its_step(tmp_path):
    assert checkpoints.resume_message(tmp_path / "checkpoint-40") == \
        "resuming from checkpoint-40 at step 40"
    assert checkpoints.resume_message(None) == "starting at step 0: no complete checkpoint"
