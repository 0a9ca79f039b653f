"""The operator's door to the API server: the watch's body used only while its status is
current, the children read by name (and only those a job can have), the Events it posts."""

from __future__ import annotations

import json
import logging
from typing import Any

from finetune_contract.api import FineTuneJobStatus
from finetune_operator.controller.kube import Cluster
from kubernetes.client.exceptions import ApiException

from tests.support.world import ftj, started_world


class FakeResponse:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj).encode()


class FakeCustomApi:
    """The FineTuneJob endpoints: GET and PATCH of the status subresource."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.gets = 0

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> FakeResponse:
        self.gets += 1
        return FakeResponse(self.obj)

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> FakeResponse:
        body = args[-1]
        self.obj = {**self.obj, "status": {**(self.obj.get("status") or {}),
                                           **body["status"]}}
        self.obj["status"] = {k: v for k, v in self.obj["status"].items() if v is not None}
        self.obj["metadata"] = {**self.obj["metadata"],
                                "resourceVersion": str(int(self.obj["metadata"]
                                                           ["resourceVersion"]) + 1)}
        return FakeResponse(self.obj)


def fake_cluster(stored: dict[str, Any]) -> tuple[Cluster, FakeCustomApi]:
    cluster = Cluster()
    fake = FakeCustomApi(stored)
    cluster.custom = fake  # type: ignore[assignment]
    return cluster, fake


def test_the_watched_body_is_used_without_a_get():
    cluster, fake = fake_cluster(ftj())
    cluster.remember(ftj())
    assert cluster.current_finetunejob("research", "chat") == ftj()
    assert fake.gets == 0


def test_a_watched_body_older_than_our_own_status_write_is_not_used():
    cluster, fake = fake_cluster(ftj())
    cluster.remember(ftj())
    cluster.write_status("research", "chat", {}, FineTuneJobStatus(phase="Pending"))
    # the watch has not delivered our write yet: the body it gave is stale, so GET
    body = cluster.current_finetunejob("research", "chat")
    assert fake.gets == 1
    assert body is not None and body["status"]["phase"] == "Pending"
    # once the watch delivers the written status, its body is used again
    cluster.remember(fake.obj)
    assert cluster.current_finetunejob("research", "chat")["status"]["phase"] == "Pending"
    assert fake.gets == 1


def test_the_lifecycles_status_write_leaves_the_progress_timers_fields_alone():
    timer = {"progress": {"step": 7}, "lostWork": {"stepsRedone": 3, "resumptions": 1}}
    cluster, fake = fake_cluster(ftj({"phase": "Running", **timer}))
    # the lifecycle's status does not carry them: a plain write would remove both
    cluster.write_status("research", "chat", fake.obj["status"],
                         FineTuneJobStatus(phase="Restarting"))
    assert fake.obj["status"]["phase"] == "Restarting"
    assert {k: fake.obj["status"][k] for k in timer} == timer


class DeletedCustomApi(FakeCustomApi):
    """The job was deleted meanwhile: its status write answers 404."""

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> FakeResponse:
        raise ApiException(status=404, reason="Not Found")


def test_a_status_write_of_a_job_deleted_meanwhile_ends_quietly(caplog):
    cluster = Cluster()
    cluster.custom = DeletedCustomApi(ftj())  # type: ignore[assignment]
    cluster.remember(ftj())
    with caplog.at_level(logging.INFO):
        cluster.write_status("research", "chat", {}, FineTuneJobStatus(phase="Pending"))
    assert "was deleted while its status was written" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_a_watched_body_the_job_is_read():
    cluster, fake = fake_cluster(ftj({"phase": "Running"}))
    assert cluster.current_finetunejob("research", "chat")["status"] == {"phase": "Running"}
    assert fake.gets == 1
    cluster.forget("research", "chat")
    cluster.current_finetunejob("research", "chat")
    assert fake.gets == 2


class FakeReads:
    """CoreV1Api and BatchV1Api reads of named children, recording what was read."""

    def __init__(self, present: dict[str, dict[str, Any]]) -> None:
        self.present = present
        self.reads: list[str] = []

    def _get(self, kind: str, name: str) -> FakeResponse:
        from kubernetes.client.exceptions import ApiException

        self.reads.append(f"{kind}/{name}")
        if f"{kind}/{name}" not in self.present:
            raise ApiException(status=404)
        return FakeResponse(self.present[f"{kind}/{name}"])

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        return self._get("ConfigMap", name)

    def read_namespaced_service(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        return self._get("Service", name)

    def read_namespaced_job(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        return self._get("Job", name)

    def list_namespaced_pod(self, namespace: str, **_: Any) -> FakeResponse:
        self.reads.append("pods")
        return FakeResponse({"items": []})


def observing_cluster(present: dict[str, dict[str, Any]]) -> tuple[Cluster, FakeReads]:
    cluster = Cluster()
    fake = FakeReads(present)
    cluster.core = fake  # type: ignore[assignment]
    cluster.batch = fake  # type: ignore[assignment]
    return cluster, fake


def test_a_job_that_never_started_reads_only_its_configmap():
    cluster, fake = observing_cluster({})
    observed = cluster.observe(ftj())
    assert fake.reads == ["ConfigMap/chat-trainer"]
    assert (observed.started_config, observed.has_service, observed.attempts) == (None, False,
                                                                                  {})


def test_a_configmap_left_by_a_crash_before_the_plan_was_recorded_means_a_full_read():
    world = started_world()  # what the crashed reconcile created
    present = {f"{kind}/{name}": obj for (kind, name), obj in world.objects.items()}
    cluster, fake = observing_cluster(present)
    observed = cluster.observe(ftj())  # the status never got the plan
    assert fake.reads == ["ConfigMap/chat-trainer", "Job/chat-r0", "Job/chat-r1",
                          "Service/chat", "pods"]
    assert observed.started_config is not None and observed.has_service
    assert list(observed.attempts) == [0]


def test_a_started_job_reads_every_child():
    world = started_world()
    cluster, fake = observing_cluster({})
    observed = cluster.observe(ftj(world.status.to_wire()))
    assert fake.reads == ["ConfigMap/chat-trainer", "Job/chat-r0", "Job/chat-r1",
                          "Service/chat"]
    assert observed.attempts == {}


def test_after_a_complete_reconcile_only_the_current_attempts_job_is_read():
    world = started_world()
    cluster, fake = observing_cluster({})
    cluster.observe(ftj(world.status.to_wire()), last_complete=True)
    assert fake.reads == ["ConfigMap/chat-trainer", "Job/chat-r0", "Service/chat"]


def test_attempts_read_around_a_restart_unless_the_last_reconcile_completed():
    from finetune_operator.controller.kube import attempts_to_read

    assert attempts_to_read(0, last_complete=False) == [0, 1]
    assert attempts_to_read(2, last_complete=False) == [1, 2, 3]
    assert attempts_to_read(2, last_complete=True) == [2]
