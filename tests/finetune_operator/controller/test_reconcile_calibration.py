"""The reconciler with memory calibration: a job that Succeeded with a memory reading is
recorded into the operator's ConfigMap once, a later job of its key is planned with it, and
a ConfigMap the operator cannot write or read never keeps a job from its status."""

from __future__ import annotations

import copy
import logging
from datetime import timedelta
from typing import Any

from finetune_contract.api import FineTuneJobStatus, MemoryCheck
from finetune_operator import calibration as cal
from finetune_operator.controller.calibration import CalibrationStore
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.lifecycle.actions import Create, Delete, SetSuspend
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.metrics import OperatorMetrics
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from tests.finetune_operator.controller.test_calibration import ConfigMaps
from tests.finetune_operator.lifecycle.test_calibrate import CALIBRATING, KEY
from tests.support.ftj_samples import OWNER
from tests.support.world import World, two_node_spec


class WorldCluster:
    """Serves one job from a World and applies what the reconciler asks, as the API server
    would; the status it writes is the World's."""

    def __init__(self, world: World) -> None:
        self.world = world

    def current_finetunejob(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace, "uid": OWNER.uid,
                             "generation": self.world.generation},
                "spec": self.world.spec, "status": self.world.status.to_wire()}

    def observe(self, body: dict[str, Any], **_: Any) -> Observed:
        return self.world.observe()

    def apply(self, namespace: str, action: Any) -> None:
        if isinstance(action, Create):
            key = (action.obj["kind"], action.obj["metadata"]["name"])
            self.world.objects.setdefault(key, copy.deepcopy(action.obj))
        elif isinstance(action, Delete):
            self.world.objects.pop((action.kind, action.name), None)
        elif isinstance(action, SetSuspend):
            self.world.objects[("Job", action.job)]["spec"]["suspend"] = action.suspend

    def write_status(self, namespace: str, name: str, old: Any, new: FineTuneJobStatus,
                     **_: Any) -> None:
        self.world.status = new

    def post_event(self, body: dict[str, Any], emit: Any, now: Any) -> None:
        pass


def reconciler_for(world: World, api: ConfigMaps) -> Reconciler:
    store = CalibrationStore(api, CALIBRATING.calibration)  # type: ignore[arg-type]
    return Reconciler(WorldCluster(world), CALIBRATING,  # type: ignore[arg-type]
                      OperatorMetrics(CollectorRegistry()), clock=lambda: world.now,
                      calibration=store)


def run_to_success(world: World, reconciler: Reconciler, over_estimate: float) -> None:
    """Plan and run the job; the progress timer read every rank at `over_estimate` times
    the planner's estimate; then the gang completes."""
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    world.start_pods()
    world.now += timedelta(seconds=30)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert world.status.phase == "Running"
    plan = world.status.plan
    measured = int(plan.calibration.estimated_bytes * over_estimate)
    world.status.memory = MemoryCheck(
        planned_bytes=plan.memory_per_gpu.total, measured_bytes=measured, largest_rank=3,
        ratio=round(measured / plan.memory_per_gpu.total, 3), ranks_read=plan.world_size)
    world.complete()


def test_a_succeeded_job_is_recorded_once_and_a_later_job_plans_with_it():
    api = ConfigMaps()
    first = World(two_node_spec(), settings=CALIBRATING)
    reconciler = reconciler_for(first, api)
    run_to_success(first, reconciler, over_estimate=1.25)
    assert first.status.plan.calibration.runs == 0  # nothing was recorded before
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert first.status.phase == "Succeeded" and first.status.memory.recorded
    entry = cal.parse(api.data())[0][KEY.name]
    assert entry.recent == (cal.Run(uid=OWNER.uid, job="research/chat", ratio=1.25),)
    reconciler.reconcile(OWNER.namespace, OWNER.name)  # again (a watch event, say)
    assert api.writes == 1

    later = World(two_node_spec(), settings=CALIBRATING)
    reconciler.cluster = WorldCluster(later)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    plan = later.status.plan
    assert (plan.calibration.key, plan.calibration.factor, plan.calibration.runs) == (
        KEY.name, 1.25, 1)
    assert plan.memory_per_gpu.total > first.status.plan.memory_per_gpu.total


def test_a_configmap_that_cannot_be_written_leaves_the_reading_for_a_later_reconcile(caplog):
    api = ConfigMaps()
    world = World(two_node_spec(), settings=CALIBRATING)
    reconciler = reconciler_for(world, api)
    run_to_success(world, reconciler, over_estimate=1.1)
    api.write_error = ApiException(status=403, reason="Forbidden")
    with caplog.at_level(logging.WARNING):
        reconciler.reconcile(OWNER.namespace, OWNER.name)  # raises nothing
    assert world.status.phase == "Succeeded" and not world.status.memory.recorded
    assert "could not record its measured memory for calibration (403 Forbidden)" in \
        caplog.text
    api.write_error = None
    reconciler.reconcile(OWNER.namespace, OWNER.name)  # the operator restarted, say
    assert world.status.memory.recorded and KEY.name in api.data()


def test_an_unreadable_configmap_plans_the_job_uncalibrated():
    api = ConfigMaps()
    api.read_error = ApiException(status=500, reason="Internal Server Error")
    world = World(two_node_spec(), settings=CALIBRATING)
    reconcile = reconciler_for(world, api)
    reconcile.reconcile(OWNER.namespace, OWNER.name)
    assert world.status.phase == "Pending"
    assert world.status.plan.calibration.runs == 0
