"""Lost work from rank 0's progress: a new run is told by its resumed-from step or by a step
below the last run's highest; the steps between are counted as redone, never below zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from finetune_contract.api import LostWork, Progress
from finetune_operator import lost_work

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def reads(*points: tuple[int | None, int | None]) -> tuple[LostWork | None, list]:
    """Feed (step, resumedFrom) reads in order; the final record and every resumption."""
    lost, events = None, []
    for i, (step, resumed) in enumerate(points):
        lost, event = lost_work.observe(lost, Progress(step=step, resumed_from_step=resumed),
                                        NOW + timedelta(seconds=i))
        if event:
            events.append(event)
    return lost, events


def test_an_uninterrupted_run_loses_nothing_and_tracks_its_highest_step():
    lost, events = reads((1, 0), (5, 0), (9, 0))
    assert events == []
    assert (lost.steps_redone, lost.resumptions, lost.run_step) == (0, 0, 9)


def test_a_run_resumed_from_an_older_checkpoint_redoes_the_steps_since():
    lost, (event,) = reads((10, 0), (14, 0), (11, 10))
    assert (event.reached_step, event.resumed_from_step, event.steps_redone) == (14, 10, 4)
    assert event.at == NOW + timedelta(seconds=2)
    assert (lost.steps_redone, lost.resumptions) == (4, 1)
    assert (lost.run_step, lost.run_resumed_from_step) == (11, 10)


def test_an_emergency_checkpoint_past_the_last_read_step_loses_nothing():
    # The last read said 14; the run got to 15 and saved there on SIGTERM.
    lost, (event,) = reads((14, 0), (15, 15))
    assert event.steps_redone == 0
    assert lost.steps_redone == 0 and lost.resumptions == 1


def test_a_second_crash_before_any_new_checkpoint_is_told_by_the_step_going_back():
    lost, events = reads((20, 0), (12, 10), (18, 10), (13, 10))
    assert [e.steps_redone for e in events] == [10, 8]
    assert lost.steps_redone == 18 and lost.resumptions == 2


def test_a_run_without_checkpoints_to_resume_from_redoes_everything():
    lost, (event,) = reads((30, 0), (2, 0))
    assert event.steps_redone == 30
    assert lost.steps_redone == 30


def test_reads_without_a_step_or_resumed_step_change_nothing():
    lost, events = reads((None, None), (5, None), (None, 0))
    assert lost is None and events == []
    before, _ = reads((7, 0))
    after, event = lost_work.observe(before, Progress(step=None, resumed_from_step=3), NOW)
    assert after == before and event is None


def test_only_the_latest_resumptions_are_kept_but_all_are_counted():
    points = []
    for run in range(lost_work.RECENT_RESUMPTIONS + 3):
        points += [(run * 10 + 5, run * 10)]
    lost, events = reads(*points)
    assert lost.resumptions == len(events) == lost_work.RECENT_RESUMPTIONS + 2
    assert len(lost.recent) == lost_work.RECENT_RESUMPTIONS
    assert lost.recent[-1] == events[-1]
    assert lost.steps_redone == 0  # each run resumed at or past where the last one was read
