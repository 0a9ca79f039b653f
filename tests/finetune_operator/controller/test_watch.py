"""The filters that decide which watch events are worth a reconcile. Pure."""

from __future__ import annotations

from typing import Any

from finetune_operator.controller.watch import JobStates, is_running, reconcile_wanted

# --------------------------------------------------------------------------- FineTuneJob events


def ftj(generation: int = 1, uid: str = "u-1", status: dict[str, Any] | None = None) -> dict:
    return {"metadata": {"name": "chat", "namespace": "research", "uid": uid,
                         "generation": generation}, "status": status or {}}


def test_a_job_new_to_the_operator_is_reconciled():
    assert reconcile_wanted(None, ftj())


def test_status_only_events_are_not_reconciled():
    assert not reconcile_wanted(ftj(), ftj(status={"phase": "Pending"}))


def test_a_spec_edit_or_a_recreated_job_is_reconciled():
    assert reconcile_wanted(ftj(), ftj(generation=2))
    assert reconcile_wanted(ftj(), ftj(uid="u-2"))


def test_running_is_read_from_the_status():
    assert is_running(ftj(status={"phase": "Running"}))
    assert not is_running(ftj(status={"phase": "Pending"}))


# --------------------------------------------------------------------------- batch Job events


def job(status: dict[str, Any] | None = None, suspend: bool = False) -> dict:
    return {"metadata": {"name": "chat-r0", "namespace": "research"},
            "spec": {"suspend": suspend}, "status": status or {}}


def test_the_job_a_reconcile_just_created_is_no_news():
    assert not JobStates().changed("ADDED", job())


def test_a_job_first_seen_with_a_status_is_news():
    assert JobStates().changed(None, job({"active": 2}))


def test_only_a_changed_status_or_suspension_is_news():
    states = JobStates()
    states.changed("ADDED", job())
    assert not states.changed("MODIFIED", job())  # e.g. a label or annotation edit
    assert states.changed("MODIFIED", job({"active": 2}))
    assert not states.changed("MODIFIED", job({"active": 2}))
    assert states.changed("MODIFIED", job({"active": 2}, suspend=True))
    assert states.changed("MODIFIED", job({"active": 1, "failed": 1}, suspend=True))


def test_a_deleted_job_is_news_and_forgotten():
    states = JobStates()
    states.changed("ADDED", job({"active": 2}))
    assert states.changed("DELETED", job({"active": 2}))
    assert len(states) == 0
