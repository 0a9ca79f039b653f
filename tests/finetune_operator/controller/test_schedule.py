"""The work queue that replaced kopf's create/update/resume handlers and timers. Pure: the
time is passed in."""

from __future__ import annotations

from finetune_operator.controller.schedule import Schedule

JOB = ("research", "chat")
OTHER = ("research", "other")


def schedule() -> Schedule:
    return Schedule(resync_interval=10.0, progress_interval=15.0)


# --------------------------------------------------------------------------- Schedule


def test_a_new_job_is_reconciled_at_once_and_resynced_an_interval_later():
    s = schedule()
    s.trigger(JOB, now=100.0)
    assert s.take(100.0) == [(JOB, "reconcile")]
    s.done(JOB, "reconcile", now=100.5)
    assert s.take(110.0) == []
    assert s.next_due(110.0) == 0.5
    assert s.take(110.5) == [(JOB, "resync")]


def test_a_job_runs_one_piece_of_work_at_a_time_and_triggers_meanwhile_merge():
    s = schedule()
    s.trigger(JOB, now=0.0)
    assert s.take(0.0) == [(JOB, "reconcile")]
    s.trigger(JOB, now=0.1)  # events while it runs
    s.trigger(JOB, now=0.2)
    assert s.take(0.3) == []  # busy
    s.done(JOB, "reconcile", now=0.4)
    assert s.take(0.4) == [(JOB, "reconcile")]  # one more, for both events
    s.done(JOB, "reconcile", now=0.5)
    assert s.take(0.5) == []


def test_jobs_are_independent():
    s = schedule()
    s.trigger(JOB, now=0.0)
    s.trigger(OTHER, now=0.0)
    assert sorted(s.take(0.0)) == [(JOB, "reconcile"), (OTHER, "reconcile")]


def test_take_gives_at_most_the_free_workers_and_reactions_before_periodic_work():
    s = schedule()
    old = [("research", f"old-{i}") for i in range(3)]
    for key in old:
        s.trigger(key, now=0.0)
    s.take(0.0)
    for key in old:
        s.done(key, "reconcile", now=0.0)  # resyncs due at 10
    s.trigger(JOB, now=12.0)  # a new job while the resyncs are overdue
    assert s.take(12.0, limit=2) == [(JOB, "reconcile"), (old[0], "resync")]
    assert s.take(12.0, limit=0) == []
    assert s.take(12.0, limit=5) == [(old[1], "resync"), (old[2], "resync")]


def test_a_transient_failure_is_retried_after_its_delay_with_a_growing_count():
    s = schedule()
    s.trigger(JOB, now=0.0)
    s.take(0.0)
    s.done(JOB, "reconcile", now=1.0, failed=True, retry_in=1.0)
    assert s.failures(JOB) == 1
    assert s.take(1.9) == []
    assert s.take(2.0) == [(JOB, "reconcile")]
    s.done(JOB, "reconcile", now=2.0, failed=True, retry_in=2.0)
    assert s.failures(JOB) == 2
    assert s.take(4.0) == [(JOB, "reconcile")]
    s.done(JOB, "reconcile", now=4.0)
    assert s.failures(JOB) == 0


def test_a_permanent_failure_waits_for_the_resync():
    s = schedule()
    s.trigger(JOB, now=0.0)
    s.take(0.0)
    s.done(JOB, "reconcile", now=1.0, failed=True)
    assert s.take(10.9) == []
    assert s.take(11.0) == [(JOB, "resync")]


def test_progress_is_read_only_while_running_first_at_once_then_every_interval():
    s = schedule()
    s.trigger(JOB, now=0.0)
    s.take(0.0)
    s.done(JOB, "reconcile", now=0.0)
    s.follow_progress(JOB, running=True, now=1.0)
    assert s.take(1.0) == [(JOB, "progress")]
    s.done(JOB, "progress", now=1.0)
    s.follow_progress(JOB, running=True, now=2.0)  # another event of the Running job
    assert s.take(9.0) == []
    assert s.take(10.0) == [(JOB, "resync")]
    s.done(JOB, "resync", now=10.0)
    assert s.take(16.0) == [(JOB, "progress")]
    s.done(JOB, "progress", now=16.0)
    s.follow_progress(JOB, running=False, now=17.0)  # it finished
    assert s.take(20.0) == [(JOB, "resync")]
    s.done(JOB, "resync", now=20.0)
    assert s.next_due(20.0) == 10.0  # the next resync; no progress read any more


def test_a_forgotten_job_gets_no_more_work_even_if_its_work_ends_later():
    s = schedule()
    s.trigger(JOB, now=0.0)
    s.take(0.0)
    s.forget(JOB)
    s.done(JOB, "reconcile", now=1.0)
    assert JOB not in s
    assert s.take(100.0) == []
    assert s.next_due(100.0) is None
