"""Goodput from rank 0's progress reads (goodput.py), over a run interrupted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from finetune_contract.api import Progress
from finetune_operator import goodput, lost_work

from tests.support.ftj_samples import plan

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PLAN = plan(gpu="A10G-24GB", gpus_per_node=2)  # bf16, 200k parameters


def read(at: float, step: int, resumed: int, run: float, startup: float, steps: float,
         checkpoint: float = 0.0, evaluation: float = 0.0) -> tuple[float, Progress]:
    return at, Progress(step=step, resumed_from_step=resumed, tokens_per_second=2000.0,
                        run_seconds=run, startup_seconds=startup, step_seconds=steps,
                        eval_seconds=evaluation, checkpoint_seconds=checkpoint)


# A run that starts at T0 (its pods running), trains 100 steps of 1 s after 20 s of start-up,
# writes a checkpoint at step 50 (5 s), is killed at step 80 having last been read at step 70;
# the next run starts 30 s later, resumes from step 50 (20 steps redone) and reads to step 100.
READS = [
    read(25, 5, 0, 25, 20, 5),
    read(95, 70, 0, 95, 20, 70, checkpoint=5),
    # killed at 110 s; the new run started at 140 s, after 15 s of its own start-up
    read(175, 70, 50, 35, 15, 20),
    read(205, 100, 50, 65, 15, 50),
]


def replay(reads=READS):
    seen, lost = None, None
    for at, progress in reads:
        now = T0 + timedelta(seconds=at)
        lost, new_run = lost_work.observe(lost, progress, now)
        seen = goodput.observe(seen, progress, new_run, PLAN, T0, now)
    return seen, lost


def test_the_interrupted_run_is_split_into_productive_and_lost_time():
    seen, lost = replay()
    assert lost.steps_redone == 20 and lost.resumptions == 1
    assert seen.wall_seconds == 205
    # steps: 70 s (first run, as last read) + 50 s (second), less 20 redone steps of 1 s
    assert seen.productive_seconds == 100
    parts = seen.lost_seconds
    assert (parts.startup, parts.checkpoints, parts.redone_steps) == (35, 5, 20)
    # the wall time without a trainer read: 205 - (95 + 65)
    assert parts.restarts == 45
    assert parts.other == 0
    assert seen.ratio == round(100 / 205, 4)
    assert seen.productive_seconds + sum(parts.model_dump().values()) == seen.wall_seconds


def test_the_speed_and_the_gpu_time_follow_the_plan():
    seen, _ = replay()
    assert PLAN.world_size == 2
    assert seen.tokens_per_second_per_gpu == 1000.0
    peak = 2 * 70e12  # the catalog's dense bf16 peak of two A10G-24GB
    assert PLAN.precision == "bf16"
    assert seen.mfu == pytest.approx(6 * PLAN.parameters * 2000.0 / peak, abs=1e-4)
    assert seen.gpu_hours == round((95 + 65) * 2 / 3600, 4)
    assert seen.cost_usd.low < seen.cost_usd.high


def test_nothing_is_claimed_before_a_trainer_that_accounts_for_its_time_is_read():
    old_trainer = Progress(step=5, resumed_from_step=0, tokens_per_second=10.0)
    assert goodput.observe(None, old_trainer, None, PLAN, T0, T0) is None
    assert goodput.observe(None, READS[0][1], None, PLAN, None, T0) is None  # not started
