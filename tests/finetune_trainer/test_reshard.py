"""When a resume goes through DeepSpeed's universal checkpoint, and what it is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_trainer import checkpoints, reshard

STEP = 12
TAG = f"global_step{STEP}"


def _zero_checkpoint(root: Path, written_by: int | None = 2, *, tag: str | None = TAG) -> Path:
    """A complete checkpoint as DeepSpeed and the trainer leave it: `latest` naming the
    tag folder that holds one optimizer shard per rank, and the marker."""
    path = root / f"checkpoint-{STEP}"
    path.mkdir(parents=True)
    if tag is not None:
        (path / tag).mkdir()
        for rank in range(written_by or 1):
            (path / tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"x")
        (path / reshard.LATEST).write_text(tag)
    if written_by is None:  # a marker from before worldSize was recorded
        (path / checkpoints.MARKER).write_text(json.dumps({"step": STEP}) + "\n")
    else:
        checkpoints.mark_complete(path, STEP, written_by)
    return path


def _converted(path: Path, *, finished: bool = True) -> None:
    (path / f"{TAG}_universal" / "zero").mkdir(parents=True)
    if finished:
        (path / reshard.LATEST_UNIVERSAL).write_text(f"{TAG}_universal")


def test_a_zero_checkpoint_resumed_on_fewer_ranks_is_converted(tmp_path):
    path = _zero_checkpoint(tmp_path, 2)
    decided = reshard.decide(path, uses_zero=True, world_size=1)
    assert decided == reshard.Reshard(path, TAG, written_by=2, world_size=1, convert=True)
    assert decided.source == path / TAG
    assert decided.target == path / f"{TAG}_universal"


def test_a_zero_checkpoint_resumed_on_more_ranks_is_converted(tmp_path):
    decided = reshard.decide(_zero_checkpoint(tmp_path, 2), uses_zero=True, world_size=4)
    assert decided is not None and decided.convert and decided.world_size == 4


def test_the_same_world_size_resumes_the_shards_directly(tmp_path):
    assert reshard.decide(_zero_checkpoint(tmp_path, 2), uses_zero=True, world_size=2) is None


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_without_deepspeed_zero_nothing_is_converted(tmp_path, world_size):
    """DDP checkpoints hold whole optimizer states; FSDP is left to its own loader."""
    path = _zero_checkpoint(tmp_path, 2)
    assert reshard.decide(path, uses_zero=False, world_size=world_size) is None


def test_an_old_marker_without_world_size_keeps_the_plain_resume(tmp_path):
    path = _zero_checkpoint(tmp_path, None)
    assert reshard.decide(path, uses_zero=True, world_size=1) is None


def test_no_checkpoint_no_conversion():
    assert reshard.decide(None, uses_zero=True, world_size=1) is None


def test_a_checkpoint_without_a_deepspeed_folder_is_not_converted(tmp_path):
    path = _zero_checkpoint(tmp_path, 2, tag=None)
    assert reshard.decide(path, uses_zero=True, world_size=1) is None


def test_a_latest_file_naming_a_missing_folder_is_not_converted(tmp_path):
    path = _zero_checkpoint(tmp_path, 2)
    (path / reshard.LATEST).write_text("global_step99")
    assert reshard.decide(path, uses_zero=True, world_size=1) is None


def test_a_finished_conversion_is_loaded_not_redone(tmp_path):
    path = _zero_checkpoint(tmp_path, 2)
    _converted(path)
    decided = reshard.decide(path, uses_zero=True, world_size=1)
    assert decided is not None and decided.convert is False


def test_a_conversion_cut_short_is_redone(tmp_path):
    """ds_to_universal writes latest_universal last: a folder without it is unfinished."""
    path = _zero_checkpoint(tmp_path, 2)
    _converted(path, finished=False)
    decided = reshard.decide(path, uses_zero=True, world_size=1)
    assert decided is not None and decided.convert is True


def test_latest_universal_naming_another_tag_does_not_count(tmp_path):
    path = _zero_checkpoint(tmp_path, 2)
    _converted(path)
    (path / reshard.LATEST_UNIVERSAL).write_text("global_step3_universal")
    assert not reshard.universal_ready(path, TAG)


def test_conversion_arguments_are_the_ones_ds_to_universal_reads(tmp_path):
    decided = reshard.decide(_zero_checkpoint(tmp_path, 2), uses_zero=True, world_size=1)
    args = reshard.conversion_args(decided)
    assert vars(args) == {
        "input_folder": str(tmp_path / f"checkpoint-{STEP}" / TAG),
        "output_folder": str(tmp_path / f"checkpoint-{STEP}" / f"{TAG}_universal"),
        "num_extract_workers": 1, "num_merge_workers": 1, "keep_temp_folder": False,
        "strict": True, "inject_missing_state": True,
    }
    # DeepSpeed's own parser yields the same names: none is missing or misspelt.
    import argparse
    import sys

    from deepspeed.checkpoint import ds_to_universal

    argv = ["--input_folder", "i", "--output_folder", "o", "--inject_missing_state"]
    saved = sys.argv
    try:
        sys.argv = ["ds_to_universal", *argv]
        parsed = ds_to_universal.parse_arguments()
    finally:
        sys.argv = saved
    assert isinstance(parsed, argparse.Namespace) and set(vars(parsed)) == set(vars(args))


def test_the_message_names_the_checkpoint_and_both_world_sizes(tmp_path):
    decided = reshard.decide(_zero_checkpoint(tmp_path, 2), uses_zero=True, world_size=1)
    assert reshard.message(decided) == (
        f"resuming checkpoint-{STEP} (written by 2 ranks) on 1 rank: converted its ZeRO "
        "states to DeepSpeed's universal checkpoint")


def test_the_message_says_when_an_earlier_conversion_is_loaded(tmp_path):
    path = _zero_checkpoint(tmp_path, 1)
    _converted(path)
    decided = reshard.decide(path, uses_zero=True, world_size=2)
    assert reshard.message(decided) == (
        f"resuming checkpoint-{STEP} (written by 1 rank) on 2 ranks: loading the universal "
        "checkpoint converted before")


def test_prepare_converts_on_rank_0_only(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(reshard, "convert", calls.append)
    decided = reshard.decide(_zero_checkpoint(tmp_path, 2), uses_zero=True, world_size=1)
    reshard.prepare(decided, rank=1)
    assert calls == [] and capsys.readouterr().out == ""
    reshard.prepare(decided, rank=0)
    assert calls == [decided]
    assert reshard.message(decided) in capsys.readouterr().out


def test_prepare_does_not_convert_a_finished_conversion_again(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(reshard, "convert", calls.append)
    path = _zero_checkpoint(tmp_path, 2)
    _converted(path)
    reshard.prepare(reshard.decide(path, uses_zero=True, world_size=1), rank=0)
    assert calls == []
    assert "loading the universal checkpoint converted before" in capsys.readouterr().out
