"""A reconcile whose decision raises fails that job (InternalError), logs the traceback
once, and neither the resyncs nor a new operator process decide about it again until it is
edited; an API error reading the job still raises, for the work loop to retry as before."""

from __future__ import annotations

import logging

import pytest
from finetune_operator.caps import MAX_MESSAGE
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.lifecycle import machine
from finetune_operator.metrics import OperatorMetrics
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from tests.finetune_operator.controller.test_reconcile import CountingCluster
from tests.support.world import SETTINGS, World

ERRORS = [ZeroDivisionError("boom " + "x" * 100_000), MemoryError(), RecursionError("deep"),
          OverflowError("int too large to convert to float"), KeyError("hiddenSize")]


def reconciler_for(cluster: CountingCluster) -> Reconciler:
    return Reconciler(cluster, SETTINGS, OperatorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                      clock=lambda: cluster.world.now)


@pytest.fixture
def planner_raising(monkeypatch):
    calls: list[BaseException] = []

    def install(error: BaseException) -> list[BaseException]:
        def plan_job(spec, **kwargs):
            calls.append(error)
            raise error
        monkeypatch.setattr(machine, "plan_job", plan_job)
        return calls
    return install


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_exception_deciding_fails_the_job_once_and_for_good(planner_raising, caplog, error):
    calls = planner_raising(error)
    world = World()
    cluster = CountingCluster(world)
    with caplog.at_level(logging.ERROR):
        reconciler_for(cluster).reconcile("research", "chat")
        for _ in range(3):
            reconciler_for(cluster).resync("research", "chat")  # and a fresh process
            world.now = world.now.replace(minute=world.now.minute + 1)
    status = world.status
    assert status.phase == "Failed"
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert failed.reason == "InternalError" and failed.message == status.message
    assert type(error).__name__ in failed.message and "chat" in failed.message
    assert len(failed.message) <= MAX_MESSAGE
    assert len(calls) == 1
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info[1] is error


def test_an_edit_decides_again(planner_raising):
    calls = planner_raising(ValueError("once"))
    world = World()
    cluster = CountingCluster(world)
    reconciler_for(cluster).reconcile("research", "chat")
    world.generation += 1
    reconciler_for(cluster).reconcile("research", "chat")
    assert len(calls) == 2


def test_an_api_error_still_raises_for_the_work_loop_to_retry():
    world = World()
    cluster = CountingCluster(world)

    def observe(body, **_):
        raise ApiException(status=503, reason="Service Unavailable")

    cluster.observe = observe  # type: ignore[method-assign]
    with pytest.raises(ApiException):
        reconciler_for(cluster).reconcile("research", "chat")
    assert world.status.phase == "Pending" and not world.status.conditions
