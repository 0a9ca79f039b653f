"""What the pods of an attempt say: every rank running, the failed rank and why, the pod the
scheduler cannot place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from finetune_operator.lifecycle.observation import Attempt, PodState
from finetune_operator.lifecycle.pods import (
    all_running,
    any_failed,
    failure_summary,
    unschedulable_message,
)

NOW = datetime(2026, 11, 1, 12, 10, tzinfo=UTC)


def test_all_running_counts_distinct_ranks_that_are_not_being_deleted():
    two = (PodState("a", "Running", "0"), PodState("b", "Running", "1"))
    assert all_running(two, nodes=2)
    assert not all_running((*two[:1], PodState("c", "Running", "0")), nodes=2)  # same rank
    assert not all_running((two[0], PodState("b", "Running", "1", deleting=True)), nodes=2)
    assert not all_running((two[0], PodState("b", "Running", None)), nodes=2)


def test_the_last_failed_rank_is_the_one_reported():
    pods = (PodState("r0", "Failed", "0", exit_reason="Error", exit_code=1,
                     finished_at="2026-11-01T12:05:00Z"),
            PodState("r1", "Failed", "1", exit_reason="OOMKilled", exit_code=137,
                     finished_at="2026-11-01T12:06:00Z"),
            PodState("r2", "Running", "2"))
    assert any_failed(pods)
    assert failure_summary(Attempt("chat-r0", pods=pods)) == (
        "node rank 1 (pod r1) failed: OOMKilled, exit code 137")


def test_without_a_failed_pod_the_jobs_reason_is_reported():
    job = Attempt("chat-r0", failed=True, failure_reason="DeadlineExceeded", failure_message="")
    assert failure_summary(job) == "Job failed: DeadlineExceeded"
    assert failure_summary(Attempt("chat-r0")) == "a node rank failed"


def test_a_pod_is_unschedulable_once_it_waited_longer_than_allowed():
    waiting = PodState("r1", "Pending", "1", waiting_since=NOW - timedelta(seconds=301),
                       scheduler_message="0/3 nodes are available")
    assert unschedulable_message((waiting,), NOW, 300) == (
        "pod r1 pending for 301 s: 0/3 nodes are available")
    assert unschedulable_message((waiting,), NOW, 600) is None
    scheduled = PodState("r1", "Pending", "1", scheduled=True,
                         waiting_since=NOW - timedelta(hours=1))
    assert unschedulable_message((scheduled,), NOW, 300) is None  # pulling its image
