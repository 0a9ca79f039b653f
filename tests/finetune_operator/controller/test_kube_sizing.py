"""The sizing pod through the operator's door to the API server (controller/kube.py): read
by name only while the job waits for it, created and deleted like the other children."""

from __future__ import annotations

from typing import Any

from finetune_contract.api import Condition
from finetune_operator.lifecycle.actions import Create, Delete

from tests.finetune_operator.controller.test_kube import FakeReads, FakeResponse, observing_cluster
from tests.support.world import ftj

POD = {"metadata": {"name": "chat-size", "annotations": {"finetune.dev/sizing-key": "k"}},
       "status": {"phase": "Succeeded", "containerStatuses": [{"name": "size", "state": {
           "terminated": {"exitCode": 0, "message": '{"model": "a/b"}'}}}]}}


class FakePods(FakeReads):
    def __init__(self, present: dict[str, dict[str, Any]]) -> None:
        super().__init__(present)
        self.calls: list[tuple[str, str]] = []

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        return self._get("Pod", name)

    def create_namespaced_pod(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self.calls.append(("create", body["metadata"]["name"]))

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        self.calls.append(("delete", name))

    def __getattr__(self, name: str) -> Any:  # the other kinds' create/delete: unused here
        if name.startswith(("create_", "delete_")):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def cluster_with(present: dict[str, dict[str, Any]]):
    cluster, _ = observing_cluster({})
    fake = FakePods(present)
    cluster.core = fake  # type: ignore[assignment]
    cluster.batch = fake  # type: ignore[assignment]
    return cluster, fake


def waiting(status: str = "Unknown") -> dict[str, Any]:
    return {"conditions": [Condition(type="Sized", status=status, reason="Sizing").to_wire()]}


def test_the_sizing_pod_is_read_only_while_the_job_waits_for_it():
    cluster, fake = cluster_with({"Pod/chat-size": POD})
    observed = cluster.observe(ftj(waiting()))
    assert fake.reads == ["ConfigMap/chat-trainer", "Pod/chat-size"]
    assert observed.sizing_pod.phase == "Succeeded"
    assert observed.sizing_pod.message == '{"model": "a/b"}'
    assert observed.sizing_pod.key == "k"
    for status in (None, waiting("True"), waiting("False")):
        cluster, fake = cluster_with({"Pod/chat-size": POD})
        assert cluster.observe(ftj(status)).sizing_pod is None
        assert fake.reads == ["ConfigMap/chat-trainer"]


def test_a_missing_sizing_pod_is_none():
    cluster, _ = cluster_with({})
    assert cluster.observe(ftj(waiting())).sizing_pod is None


def test_the_pod_is_created_and_deleted():
    cluster, fake = cluster_with({})
    cluster.apply("research", Create({"kind": "Pod", "metadata": {"name": "chat-size"}}))
    cluster.apply("research", Delete("Pod", "chat-size"))
    assert fake.calls == [("create", "chat-size"), ("delete", "chat-size")]
