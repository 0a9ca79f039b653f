"""A 2-rank DeepSpeed ZeRO-2 run stopped by SIGTERM (its emergency checkpoint holds one
optimizer shard per rank) resumes on 1 rank with the same global batch: rank 0 converts the
shards to DeepSpeed's universal checkpoint first, and the run ends at the same step with the
same tokens as an uninterrupted 2-rank twin and a final loss within tolerance."""

from __future__ import annotations

import shutil

import pytest
from finetune_trainer import checkpoints, reshard

from tests.support import preempted

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
STEPS = 12
SIGNAL_AFTER_STEPS = 3  # no periodic save before the end: saveSteps is 1000
GLOBAL_BATCH = 8
MICRO = 4
# 1 rank sums the micro-batches in another order than 2 ranks' reduce-scatter, and its first
# steps after the resume draw no saved RNG state (as for DDP in test_preemption.py).
LOSS_TOLERANCE = 1e-2


def _write(root, ranks: int):
    return preempted.write_run(root, ranks, steps=STEPS, global_batch=GLOBAL_BATCH,
                               micro=MICRO, strategy="zero2")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero2-preempted")
    status, output = preempted.interrupt(root, _write(root, 2), 2, SIGNAL_AFTER_STEPS)
    return root, status, output


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero2-uninterrupted")
    preempted.run(root, _write(root, 2), 2)
    return preempted.summary(root)


@pytest.fixture(scope="module")
def resumed(interrupted, tmp_path_factory):
    """The interrupted run's output resumed on 1 rank: its root, checkpoint and stdout."""
    source, status, output = interrupted
    assert status != 0, output[-4000:]
    root = tmp_path_factory.mktemp("zero2-resumed-on-1")
    shutil.copytree(source / "out", root / "out")
    checkpoint = checkpoints.latest_complete(root / "out")
    assert checkpoint is not None, output[-4000:]
    proc = preempted.run(root, _write(root, 1), 1)
    return root, checkpoint, proc.stdout


def test_the_emergency_checkpoint_is_sharded_by_two_ranks(interrupted):
    root, _, output = interrupted
    checkpoint = checkpoints.latest_complete(root / "out")
    assert checkpoint is not None, output[-4000:]
    assert checkpoints.written_world_size(checkpoint) == 2
    tag = reshard.deepspeed_tag(checkpoint)
    assert tag == f"global_step{checkpoints.step_of(checkpoint)}"
    assert len(list((checkpoint / tag).glob("*optim_states.pt"))) == 2


def test_the_resume_on_one_rank_converts_once_and_says_so(resumed):
    root, checkpoint, stdout = resumed
    step = checkpoints.step_of(checkpoint)
    assert (f"resuming checkpoint-{step} (written by 2 ranks) on 1 rank: converted its ZeRO "
            "states to DeepSpeed's universal checkpoint") in stdout
    kept = root / "out" / checkpoint.name
    assert reshard.universal_ready(kept, f"global_step{step}")
    assert (kept / f"global_step{step}_universal" / "zero").is_dir()


def test_the_resume_on_one_rank_ends_like_the_uninterrupted_run(resumed, twin):
    root, checkpoint, _ = resumed
    summary = preempted.summary(root)
    assert summary["resumedFrom"] == str(root / "out" / checkpoint.name)
    assert summary["strategy"] == {"planned": "zero2", "wrapper": "deepspeed-zero2",
                                   "worldSize": 1}
    assert summary["steps"] == twin["steps"] == STEPS
    assert summary["tokens"] == twin["tokens"]  # no row repeated or skipped
    assert summary["lastLoss"] == pytest.approx(twin["lastLoss"], rel=LOSS_TOLERANCE)


def test_the_steps_after_the_resume_follow_the_uninterrupted_run(resumed, twin):
    """Every step after the resume, not only the last: each one steps with the Adam moments
    the universal checkpoint carried over from the two shards."""
    root, checkpoint, _ = resumed
    step = checkpoints.step_of(checkpoint)
    after = {p["step"]: p["loss"] for p in preempted.summary(root)["lossCurve"] if p["step"] > step}
    expected = {p["step"]: p["loss"] for p in twin["lossCurve"] if p["step"] > step}
    assert sorted(after) == sorted(expected) == list(range(step + 1, STEPS + 1))
    for at, loss in after.items():
        assert loss == pytest.approx(expected[at], rel=LOSS_TOLERANCE), f"step {at}"
