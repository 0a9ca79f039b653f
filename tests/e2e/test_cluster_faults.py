"""Faults on the real cluster (issue 20): a trainer container killed by containerd, and a
trainer pod deleted with kubectl, each mid-run after a complete checkpoint. The job resumes
from that checkpoint and ends at the same step, loss and eval loss as an uninterrupted run of
the same job that trains beside it; no attempt's Job is left behind. The deleted pod gets
SIGTERM and its planned grace period (issue 21): it writes an emergency checkpoint at the step
it stopped, so the job loses at most the step in flight, and status.lostWork says 0 redone.

Three one-pod jobs train at once in one restricted namespace, each with its own hostPath
PersistentVolume (the checkpoints must outlive the pod)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from finetune_contract.layout import METRICS_PORT
from finetune_operator.scrape import ProgressUnavailable, fetch_progress

from tests.conftest import require_tool
from tests.e2e.cluster import Cluster, cluster_setting, wait_until
from tests.e2e.conftest import wait_for_phase
from tests.e2e.jobs import delete_volume, newest_complete, one_pod_job, running_pod, summary, volume

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "ftj-faults"
STEPS, SAVE = 30, 10
RUN_TIMEOUT = 1200
CONTAINERD_SOCK = cluster_setting("CONTAINERD_SOCK").replace(
    "$CLUSTER_RUN", os.environ.get("CLUSTER_RUN", "/run/finetune-cluster"))


def _replacement_started(cluster: Cluster, name: str, before: str) -> bool:
    """A pod other than `before` runs, or already ran to its end."""
    pods = cluster.get("pods", "-n", NAMESPACE, "-l", f"finetune.dev/job={name}")["items"]
    return any(p["metadata"]["name"] != before
               and p["status"].get("phase") in ("Running", "Succeeded") for p in pods)


def _kill_trainer_container(cluster: Cluster, pod: dict[str, Any]) -> None:
    """SIGKILL to the trainer container's task, through containerd, as a node fault would:
    no chance to checkpoint."""
    (status,) = [s for s in pod["status"]["containerStatuses"] if s["name"] == "trainer"]
    container = status["containerID"].removeprefix("containerd://")
    subprocess.run([require_tool("ctr"), "--address", CONTAINERD_SOCK, "-n", "k8s.io", "task",
                    "kill", "--signal", "SIGKILL", container], check=True, timeout=60,
                   capture_output=True)


def _delete_pod(cluster: Cluster, pod: dict[str, Any]) -> None:
    cluster.kubectl("delete", "pod", "-n", NAMESPACE, pod["metadata"]["name"], "--wait=false")


def _trained_step(pod: dict[str, Any], complete: int) -> int:
    """The optimizer step rank 0 serves now (the host reaches the pod network); at least the
    newest complete checkpoint's, which it has passed."""
    try:
        progress = fetch_progress(f"http://{pod['status']['podIP']}:{METRICS_PORT}/metrics")
    except ProgressUnavailable:
        return complete
    return max(progress.step or 0, complete)


FAULTS: dict[str, Callable[[Cluster, dict[str, Any]], None]] = {
    "killed": _kill_trainer_container, "deleted": _delete_pod}


@pytest.fixture(scope="module")
def runs(cluster: Cluster, operator_release: str) -> Iterator[dict[str, dict[str, Any]]]:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=300)
    cluster.restricted_namespace(NAMESPACE)
    volumes = {name: volume(cluster, NAMESPACE, name) for name in ("steady", *FAULTS)}
    for name in volumes:
        cluster.apply_text(yaml.safe_dump(one_pod_job(NAMESPACE, name, STEPS, SAVE)))
    recovered: dict[str, float] = {}  # seconds from the fault to a new running pod
    complete: dict[str, int] = {}  # the newest complete checkpoint's step at the fault
    # Both faults land as soon as each job has its first checkpoint: one waiting on the
    # other's recovery could find its job already past the last step.
    struck: dict[str, tuple[str, float]] = {}  # name -> (the faulted pod, when)
    stepped: dict[str, int] = {}  # name -> the step rank 0 had trained just before the fault
    deadline = time.monotonic() + RUN_TIMEOUT
    while len(struck) < len(FAULTS) and time.monotonic() < deadline:
        for name in FAULTS.keys() - struck.keys():
            pod = running_pod(cluster, NAMESPACE, name)
            if pod and (volumes[name] / f"checkpoint-{SAVE}" / "COMPLETE").exists():
                complete[name] = newest_complete(volumes[name])
                stepped[name] = _trained_step(pod, complete[name])
                FAULTS[name](cluster, pod)
                struck[name] = (pod["metadata"]["name"], time.monotonic())
        time.sleep(0.5)
    assert len(struck) == len(FAULTS), cluster.diagnostics(NAMESPACE)
    for name, (before, at) in struck.items():
        wait_until(f"{name}: a new pod after the fault",
                   lambda n=name, b=before: _replacement_started(cluster, n, b), RUN_TIMEOUT,
                   on_timeout=lambda: cluster.diagnostics(NAMESPACE))
        recovered[name] = time.monotonic() - at  # an upper bound: polled one job at a time
    out = {}
    for name, path in volumes.items():
        wait_for_phase(cluster, NAMESPACE, name, {"Succeeded", "Failed"}, RUN_TIMEOUT)
        out[name] = {"job": cluster.get("ftj", name, "-n", NAMESPACE),
                     "summary": summary(path),
                     "jobs": cluster.get("jobs", "-n", NAMESPACE, "-l",
                                         f"finetune.dev/job={name}")["items"],
                     "recovered_s": recovered.get(name),
                     "complete_at_fault": complete.get(name),
                     "step_at_fault": stepped.get(name)}
        print(f"{name}: {out[name]['job']['status']['phase']}, restarts "
              f"{out[name]['job']['status'].get('restarts')}, a new pod running "
              f"{recovered.get(name) or 0:.0f} s after the fault")
    yield out
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    for name in volumes:
        delete_volume(cluster, NAMESPACE, name)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_faulted_job_resumes_and_ends_like_an_uninterrupted_one(
        cluster: Cluster, runs: dict, fault: str) -> None:
    steady, faulted = runs["steady"], runs[fault]
    assert steady["job"]["status"]["phase"] == "Succeeded", cluster.diagnostics(NAMESPACE)
    assert faulted["job"]["status"]["phase"] == "Succeeded", cluster.diagnostics(NAMESPACE)
    summary, reference = faulted["summary"], steady["summary"]
    assert reference.get("resumedFrom") is None
    # From the newest checkpoint complete at the fault (one more may complete in between).
    resumed = re.search(r"checkpoint-(\d+)$", str(summary.get("resumedFrom", "")))
    assert resumed, summary.get("resumedFrom")
    assert faulted["complete_at_fault"] <= int(resumed[1]) < STEPS, summary["resumedFrom"]
    assert summary["steps"] == reference["steps"] == STEPS
    after = {p["step"]: p["loss"] for p in summary["lossCurve"]}
    for point in reference["lossCurve"]:
        if point["step"] in after:
            assert after[point["step"]] == pytest.approx(point["loss"], rel=1e-4), point
    assert summary["evalLoss"] == pytest.approx(reference["evalLoss"], rel=1e-4)
    assert len(faulted["jobs"]) == 1, [j["metadata"]["name"] for j in faulted["jobs"]]


def test_a_killed_container_restarts_the_gang_once(runs: dict) -> None:
    status = runs["killed"]["job"]["status"]
    assert status["restarts"] == 1, status


def test_a_deleted_pod_checkpoints_the_step_it_reached(cluster: Cluster, runs: dict) -> None:
    deleted = runs["deleted"]
    resumed = re.search(r"checkpoint-(\d+)$", str(deleted["summary"].get("resumedFrom", "")))
    assert resumed, deleted["summary"].get("resumedFrom")
    # The step read just before `kubectl delete pod`, or a later one: the step in flight at
    # SIGTERM is the most that is lost.
    assert int(resumed[1]) >= deleted["step_at_fault"] >= SAVE, deleted["summary"]["resumedFrom"]
    status = deleted["job"]["status"]
    assert status["restarts"] == 1, status
    # Nothing was trained twice. The progress timer (every 5 s here) counts the resumption
    # only when it read the first run before the delete, which a fast run may not give it.
    lost = status.get("lostWork") or {"stepsRedone": 0, "resumptions": 0}
    assert lost["stepsRedone"] == 0, lost
    assert lost["resumptions"] <= 1, lost
    grace = status["plan"]["terminationGraceSeconds"]
    pod_spec = deleted["jobs"][0]["spec"]["template"]["spec"]
    assert pod_spec["terminationGracePeriodSeconds"] == grace >= 30
