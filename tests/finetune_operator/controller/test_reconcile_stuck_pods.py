"""Pods stuck on an image, a missing Secret or a crash loop, through the controller: the
Reconciler with its real Cluster client against the emulated API server reads the pods' raw
statuses, writes the PodsStuck condition and posts its Warning Event once, and clears it
when the pods start. The test plays the Job controller and the kubelet (tests/support)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from finetune_operator.controller.kube import Cluster
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.settings import Settings
from prometheus_client import CollectorRegistry

from tests.support.emulator import EmulatorThread
from tests.support.wiring import Kube, emulated_cluster
from tests.support.world import two_node_spec, waiting_status


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[EmulatorThread]:
    with emulated_cluster(tmp_path_factory.mktemp("kube")) as emulator:
        yield emulator


@pytest.fixture
def kube(api) -> Kube:
    return Kube()


@pytest.fixture
def reconciler(api) -> Reconciler:
    metrics = OperatorMetrics(CollectorRegistry())
    return Reconciler(Cluster(metrics), Settings(), metrics)


def events(api: EmulatorThread, ns: str) -> list[dict[str, Any]]:
    return api.read(lambda emulator: [
        dict(obj) for (res, namespace, _), obj in emulator.objects.items()
        if res.plural == "events" and namespace == ns and not obj.deleted])


def condition(kube: Kube, ns: str, type_: str) -> dict[str, Any] | None:
    return next((c for c in kube.status(ns, "chat").get("conditions", [])
                 if c["type"] == type_), None)


def started(kube: Kube, reconciler: Reconciler, ns: str) -> tuple[dict[str, Any], list[str]]:
    """The job planned, its Job created and the Job's pods made, Pending. Its output is on a
    PVC, so that the only Warning Events are the ones under test (no EphemeralOutput)."""
    kube.apply(ns, "chat", two_node_spec(output={"pvc": "checkpoints", "path": "/mnt/out"}))
    reconciler.reconcile(ns, "chat")
    job = kube.job(ns, "chat-r0")
    assert job is not None
    return job, kube.start_pods(ns, job, phase="Pending")


STUCK = [
    ("ErrImagePull", 'failed to pull and unpack image "registry.test/nope:1": not found',
     "pull secret"),
    ("ImagePullBackOff", 'Back-off pulling image "registry.test/nope:1"', "imagePullSecrets"),
    ("InvalidImageName", 'couldn\'t parse image name "Bad:Name"', "not a valid image"),
    ("CreateContainerConfigError", 'secret "hf-token" not found',
     "create the Secret or ConfigMap it names"),
]


@pytest.mark.parametrize(("reason", "said", "advice"), STUCK, ids=[s[0] for s in STUCK])
def test_a_stuck_pod_gets_a_condition_and_one_warning_event_until_it_starts(
        api, kube, reconciler, reason, said, advice):
    ns = f"stuck-{reason.lower()}"
    _, pods = started(kube, reconciler, ns)
    for pod in pods:
        kube.set_pod_status(ns, pod, waiting_status(reason, said))
    reconciler.reconcile(ns, "chat")
    stuck = condition(kube, ns, "PodsStuck")
    assert stuck is not None and (stuck["status"], stuck["reason"]) == ("True", reason)
    assert stuck["message"].startswith(
        f"{reason} in node rank 0 (pod {pods[0]}) container trainer (and 1 more pod(s)): "
        f"{said}; ")
    assert advice in stuck["message"]
    status = kube.status(ns, "chat")
    assert (status["phase"], status["message"]) == ("Pending", stuck["message"])
    (warning,) = [e for e in events(api, ns) if e["type"] == "Warning"]
    assert (warning["reason"], warning["message"]) == (reason, stuck["message"])
    assert warning["involvedObject"]["kind"] == "FineTuneJob"
    for _ in range(3):  # resyncs: nothing new to say
        reconciler.reconcile(ns, "chat")
    assert len(events(api, ns)) == 2  # Created and the warning
    # fixed (the Secret created, the pull secret added): the pods start
    for pod in pods:
        kube.set_pod_status(ns, pod, {"phase": "Running", "containerStatuses": [
            {"name": "trainer", "image": "x", "imageID": "", "ready": True, "restartCount": 0,
             "state": {"running": {"startedAt": "2026-11-01T12:00:00Z"}}}]})
    reconciler.reconcile(ns, "chat")
    reconciler.reconcile(ns, "chat")
    cleared = condition(kube, ns, "PodsStuck")
    assert cleared is not None and (cleared["status"], cleared["reason"]) == ("False",
                                                                             "Recovered")
    assert kube.status(ns, "chat")["phase"] == "Running"
    assert sorted(e["reason"] for e in events(api, ns)) == sorted(["Created", reason,
                                                                  "Recovered", "Running"])


def test_a_crash_looping_trainer_is_a_rank_failure_and_the_event_says_how_to_read_its_logs(
        api, kube, reconciler):
    ns = "stuck-crashloop"
    _, pods = started(kube, reconciler, ns)
    kube.set_pod_status(ns, pods[0], {"phase": "Running"})
    kube.set_pod_status(ns, pods[1], waiting_status(
        "CrashLoopBackOff", "back-off 10s restarting failed container=trainer", phase="Running",
        last={"reason": "Error", "exitCode": 1}))
    reconciler.reconcile(ns, "chat")  # rank 0 is deleted first, and stops
    assert pods[0] not in [p.metadata.name for p in kube.core.list_namespaced_pod(ns).items]
    assert kube.status(ns, "chat")["restarts"] == 0
    reconciler.reconcile(ns, "chat")
    status = kube.status(ns, "chat")
    assert (status["phase"], status["restarts"]) == ("Restarting", 1)
    assert kube.job(ns, "chat-r1") is not None
    (warning,) = [e for e in events(api, ns) if e["type"] == "Warning"]
    assert warning["reason"] == "Restarting"
    assert warning["message"].startswith(
        f"CrashLoopBackOff in node rank 1 (pod {pods[1]}) container trainer: back-off 10s "
        "restarting failed container=trainer (last run: Error, exit code 1); read its logs: "
        f"kubectl logs -n {ns} {pods[1]} -c trainer --previous; restarting the gang")
