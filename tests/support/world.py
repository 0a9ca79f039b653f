"""`World` plays the API server for the pure lifecycle: it applies the actions to a dict of
objects and keeps the status, as the shell would, and shows them back to the lifecycle through
the shell's own observation builder (controller/observe.py). Tests then change what the
cluster shows (pods, Job status) and decide again.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from typing import Any

from finetune_contract.api import FineTuneJobStatus
from finetune_operator import calibration as cal
from finetune_operator import names
from finetune_operator.controller.caches import spec_caches
from finetune_operator.controller.observe import observation
from finetune_operator.lifecycle import machine
from finetune_operator.lifecycle.actions import Create, Decision, Delete, RecordMemory, SetSuspend
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.lifecycle.spec import SpecCaches
from finetune_operator.lifecycle.step import attempt_number
from finetune_operator.settings import Settings

from tests.support.ftj_samples import OWNER, spec_dict

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


SETTINGS = Settings(unschedulable_after=300)


TWO_NODES = {"gpu": "cpu", "gpusPerNode": 2, "nodes": 2, "maxNodes": 2, "strategy": "ddp"}


def two_node_spec(**overrides: Any) -> dict[str, Any]:
    return spec_dict(**{"resources": TWO_NODES, **overrides})


class World:
    def __init__(self, spec: dict[str, Any] | None = None, settings: Settings = SETTINGS,
                 caches: SpecCaches | None = None):
        self.spec = spec or two_node_spec()
        self.generation = 1
        self.status = FineTuneJobStatus()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.now = T0
        self.settings = settings
        self.history: list[Decision] = []
        self.caches = caches or SpecCaches()
        # True: a suspended Job's pods stay until a test ends them (their trainers are still
        # writing the emergency checkpoint); False: they are gone at once.
        self.suspension_keeps_pods = False
        # The operator's calibration table as the shell reads it (None: calibration off);
        # a RecordMemory action records into it, as the shell records into its ConfigMap.
        self.calibration: cal.Table | None = None

    # what the shell reads, typed as the shell types it (controller/observe.py)
    def observe(self) -> Observed:
        current = attempt_number(self.status)
        jobs = {a: copy.deepcopy(self.objects[("Job", names.batch_job_name("chat", a))])
                for a in (current - 1, current, current + 1)
                if ("Job", names.batch_job_name("chat", a)) in self.objects}
        body = {"metadata": {"name": OWNER.name, "namespace": OWNER.namespace,
                             "uid": OWNER.uid, "generation": self.generation},
                "spec": copy.deepcopy(self.spec)}
        observed = observation(
            body, self.status.model_copy(deep=True),
            config_map=copy.deepcopy(self.objects.get(("ConfigMap", "chat-trainer"))),
            service=copy.deepcopy(self.objects.get(("Service", "chat"))),
            jobs=jobs, pods=copy.deepcopy(self.pods))
        return dataclasses.replace(observed, calibration=self.calibration)

    def decide(self) -> Decision:
        return machine.decide(self.observe(), self.now, self.settings, caches=self.caches)

    # what the shell does
    def step(self, *, write_status: bool = True) -> Decision:
        decision = self.decide()
        for action in decision.actions:
            if isinstance(action, Create):
                key = (action.obj["kind"], action.obj["metadata"]["name"])
                self.objects.setdefault(key, copy.deepcopy(action.obj))  # 409 when present
            elif isinstance(action, Delete):
                self.objects.pop((action.kind, action.name), None)
                if action.kind == "Job":
                    self.pods = [p for p in self.pods
                                 if p["metadata"]["labels"]["batch.kubernetes.io/job-name"]
                                 != action.name]
            elif isinstance(action, SetSuspend):
                self.objects[("Job", action.job)]["spec"]["suspend"] = action.suspend
                if action.suspend and not self.suspension_keeps_pods:
                    self.pods = []
            elif isinstance(action, RecordMemory):
                self.calibration = cal.record(self.calibration or cal.EMPTY, action.key,
                                              action.run)
        if write_status:
            self.status = decision.status
        self.history.append(decision)
        return decision

    # what the cluster does
    def job(self, attempt: int | None = None) -> dict[str, Any]:
        attempt = attempt_number(self.status) if attempt is None else attempt
        return self.objects[("Job", names.batch_job_name("chat", attempt))]

    def start_pods(self, phase: str = "Running", attempt: int | None = None,
                   count: int | None = None) -> None:
        job = self.job(attempt)
        name = job["metadata"]["name"]
        n = job["spec"]["completions"] if count is None else count
        self.pods = [pod(name, i, phase) for i in range(n)]

    def fail_rank(self, index: int, reason: str = "Error", code: int = 1, *,
                  gang_stopped: bool = True) -> None:
        """Rank `index` fails and the Job fails with it. `gang_stopped`: the other running
        pods have stopped too, later (SIGTERM from the Job controller: exit 143), as they
        have by the time a restart may begin; False: they still run."""
        self.pods[index]["status"] = _terminated(reason, code, "2026-11-01T12:05:00Z")
        if gang_stopped:
            for other in self.pods:
                if other["status"].get("phase") == "Running":
                    other["status"] = _terminated("Error", 143, "2026-11-01T12:05:20Z")
        self.job()["status"] = {"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}

    def complete(self) -> None:
        job = self.job()
        job["status"] = {"succeeded": job["spec"]["completions"],
                         "conditions": [{"type": "Complete", "status": "True"}]}
        for p in self.pods:
            p["status"] = {"phase": "Succeeded"}

    def edit(self, **sections: Any) -> None:
        self.spec = {**self.spec, **sections}
        self.generation += 1


def _terminated(reason: str, code: int, at: str) -> dict[str, Any]:
    return {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {
        "terminated": {"reason": reason, "exitCode": code, "finishedAt": at}}}]}


def pod(job: str, index: int, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{job}-{index}-abcde", "creationTimestamp": "2026-11-01T12:00:00Z",
                     "labels": {"batch.kubernetes.io/job-name": job, "finetune.dev/job": "chat"},
                     "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {"phase": phase},
    }


def waiting_status(reason: str, message: str = "", *, container: str = "trainer",
                   init: bool = False, phase: str = "Pending",
                   image: str = "registry.test/finetune-trainer:test",
                   others: list[dict[str, Any]] | None = None,
                   last: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod status whose `container` waits for `reason` ("ImagePullBackOff", ...), as the
    kubelet writes it; `others` are more entries of containerStatuses."""
    entry: dict[str, Any] = {"name": container, "image": image, "imageID": "", "ready": False,
                             "restartCount": 0,
                             "state": {"waiting": {"reason": reason, "message": message}}}
    if last:
        entry["lastState"] = {"terminated": last}
    key = "initContainerStatuses" if init else "containerStatuses"
    status: dict[str, Any] = {"phase": phase, "conditions": [
        {"type": "PodScheduled", "status": "True"}], key: [entry]}
    status["containerStatuses"] = [*status.get("containerStatuses", []), *(others or [])]
    return status


def started_world(**spec: Any) -> World:
    """A job planned with its children, by a World that keeps the operator's caches."""
    world = World(two_node_spec(**spec), caches=spec_caches())
    world.step()  # planned: ConfigMap, Service and Job created
    return world


def finished(world: World) -> World:
    world.start_pods()
    world.step()
    world.complete()
    world.step()
    assert world.status.phase == "Succeeded"
    return world


def ftj(status: dict[str, Any] | None = None, version: str = "1") -> dict[str, Any]:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": "chat", "namespace": "research", "uid": "u-1",
                         "resourceVersion": version, "generation": 1},
            "spec": two_node_spec(), "status": status or {}}
