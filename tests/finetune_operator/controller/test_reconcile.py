"""One reconcile of the controller: the resync skips finished jobs whose clock cannot change
anything, and a reconcile that failed makes the next one look for Jobs it left behind."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from finetune_contract.api import FineTuneJobStatus
from finetune_operator import names
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.lifecycle.actions import Create, Delete
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.lifecycle.step import CHILD_REJECTED
from finetune_operator.metrics import OperatorMetrics
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from tests.support.world import SETTINGS, T0, World, finished, started_world, two_node_spec


class CountingCluster:
    """Serves one job from a World; counts the reads a reconcile makes."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.observes = 0

    def current_finetunejob(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace, "uid": "u-1",
                             "generation": self.world.generation},
                "spec": self.world.spec, "status": self.world.status.to_wire()}

    def observe(self, body: dict[str, Any], **_: Any) -> Observed:
        self.observes += 1
        return self.world.observe()

    def apply(self, namespace: str, action: Any) -> None:
        if isinstance(action, Delete):
            self.world.objects.pop((action.kind, action.name), None)

    def write_status(self, namespace: str, name: str, old: Any, new: FineTuneJobStatus,
                     **_: Any) -> None:
        self.world.status = new

    def post_event(self, body: dict[str, Any], emit: Any, now: Any) -> None:
        pass

    def forget(self, namespace: str, name: str) -> None:
        pass


def test_the_resync_timer_reads_nothing_for_a_finished_job_until_its_ttl_is_due():
    world = finished(started_world(runPolicy={"ttlSecondsAfterFinished": 60}))
    cluster = CountingCluster(world)
    reconciler = Reconciler(cluster, SETTINGS, OperatorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                            clock=lambda: world.now)
    world.now = T0 + timedelta(seconds=10)
    reconciler.resync("research", "chat")
    assert cluster.observes == 0
    world.now = (world.status.completion_time or T0) + timedelta(seconds=60)
    reconciler.resync("research", "chat")  # due: the children are deleted
    assert cluster.observes == 1
    assert not any(kind == "Job" for kind, _ in world.objects)
    reconciler.resync("research", "chat")  # nothing was left: settled
    reconciler.resync("research", "chat")
    assert cluster.observes == 2
    assert names.config_map_name("chat") not in {n for _, n in world.objects}


class RecordingCluster(CountingCluster):
    """Records what each observe was told about the last reconcile; can fail a status write."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.told: list[bool] = []
        self.fail_write = False

    def observe(self, body: dict[str, Any], **kwargs: Any) -> Observed:
        self.told.append(kwargs["last_complete"])
        return super().observe(body)

    def write_status(self, *args: Any, **kwargs: Any) -> None:
        if self.fail_write:
            raise RuntimeError("the API failed")
        super().write_status(*args, **kwargs)


def test_a_reconcile_that_failed_makes_the_next_one_look_for_left_over_jobs():
    world = started_world()
    cluster = RecordingCluster(world)
    reconciler = Reconciler(cluster, SETTINGS, OperatorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                            clock=lambda: world.now)
    reconciler.reconcile("research", "chat")  # a new process: nothing known
    reconciler.reconcile("research", "chat")  # the last one completed
    cluster.fail_write = True
    with pytest.raises(RuntimeError):
        reconciler.reconcile("research", "chat")
    cluster.fail_write = False
    reconciler.reconcile("research", "chat")  # after the failure: look again
    assert cluster.told == [False, True, True, False]


class RefusingCluster(CountingCluster):
    """Creates what a World's shell creates, but answers a Job create with the API server's
    422; records the actions applied, the status written and the Events posted."""

    def __init__(self, world: World, status: int = 422) -> None:
        super().__init__(world)
        self.status = status
        self.applied: list[Any] = []
        self.events: list[Any] = []

    def apply(self, namespace: str, action: Any) -> None:
        if isinstance(action, Create) and action.obj["kind"] == "Job":
            err = ApiException(status=self.status, reason="Unprocessable Entity")
            err.body = json.dumps({"kind": "Status", "code": self.status, "message":
                                   'Job.batch "chat-r0" is invalid: spec.template.spec.'
                                   "tolerations[0].operator: Invalid value"})
            raise err
        self.applied.append(action)
        if isinstance(action, Create):
            self.world.objects[(action.obj["kind"], action.obj["metadata"]["name"])] = \
                action.obj
        super().apply(namespace, action)

    def post_event(self, body: dict[str, Any], emit: Any, now: Any) -> None:
        self.events.append(emit)


def test_a_job_the_api_server_refuses_fails_the_job_and_leaves_no_child(caplog):
    world = World(two_node_spec())
    cluster = RefusingCluster(world)
    reconciler = Reconciler(cluster, SETTINGS, OperatorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                            clock=lambda: world.now)
    reconciler.reconcile("research", "chat")  # raises nothing: no retry, no traceback
    assert world.objects == {}  # the ConfigMap and Service created before are deleted
    assert [type(a).__name__ for a in cluster.applied] == ["Create", "Create", "Delete",
                                                           "Delete"]
    assert world.status.phase == "Failed"
    assert "tolerations[0].operator: Invalid value" in (world.status.message or "")
    assert [(e.type, e.reason) for e in cluster.events] == [("Warning", CHILD_REJECTED)]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "refused Job chat-r0 (422)" in warnings[0].getMessage()
    reconciler.reconcile("research", "chat")  # the next reconcile creates nothing again
    assert len(cluster.applied) == 4


def test_a_transient_error_creating_a_child_still_raises_for_the_retry():
    world = World(two_node_spec())
    cluster = RefusingCluster(world, status=503)
    reconciler = Reconciler(cluster, SETTINGS, OperatorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                            clock=lambda: world.now)
    with pytest.raises(ApiException):
        reconciler.reconcile("research", "chat")
    assert world.status == FineTuneJobStatus() and cluster.events == []  # not written


class NamespaceGoneCluster(RefusingCluster):
    """Answers the Job create as the API server does in a namespace being deleted (403 from
    NamespaceLifecycle) or already gone (404)."""

    def apply(self, namespace: str, action: Any) -> None:
        if isinstance(action, Create) and action.obj["kind"] == "Job":
            err = ApiException(status=self.status, reason="Forbidden")
            err.body = json.dumps({"kind": "Status", "code": self.status, "message": (
                "jobs.batch \"chat-r0\" is forbidden: unable to create new content in "
                "namespace research because it is being terminated") if self.status == 403
                else 'namespaces "research" not found'})
            raise err
        super().apply(namespace, action)


@pytest.mark.parametrize("status", [403, 404])
def test_a_namespace_being_deleted_is_no_failure_of_the_job_nor_of_the_operator(
        caplog, status):
    caplog.set_level(logging.INFO)
    world = World(two_node_spec())
    cluster = NamespaceGoneCluster(world, status=status)
    reconciler = Reconciler(cluster, SETTINGS, OperatorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                            clock=lambda: world.now)
    reconciler.reconcile("research", "chat")  # raises nothing: nothing to retry
    assert world.status == FineTuneJobStatus() and cluster.events == []  # nothing written
    assert [r.levelname for r in caplog.records if r.levelno >= 30] == []
    assert any("namespace research is gone or being deleted" in r.getMessage()
               for r in caplog.records)
