"""Stuck pods are named, not shown as a normal wait (issue 20), on the real cluster: a trainer
image that cannot be pulled, and a token Secret the job's namespace lacks (it exists in
another namespace: a job cannot make its pods use it). Each shows up within 60 s of the job's
creation as the condition PodsStuck with the kubelet's reason and as a Warning Event with it,
and the job waits in Pending, as docs/operator.md says (a Secret created meanwhile would let
the pods start), with status.message naming the pod, the container and what to do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.cluster import Cluster, condition

pytestmark = [pytest.mark.cluster]

NAMESPACE = "ftj-stuck"
OTHER_NAMESPACE = "ftj-stuck-other"
DEADLINE = 60  # seconds from the job's creation, as the issue asks
# A registry on a closed loopback port: the pull fails at once, and nothing leaves the node.
MISSING_IMAGE = "127.0.0.1:1/finetune-trainer:missing"
CASES = {
    "missing-image": ({"image": MISSING_IMAGE}, {"ErrImagePull", "ImagePullBackOff"}),
    "foreign-secret": ({"secrets": {"hfToken": {"name": "foreign-token", "key": "token"}}},
                       {"CreateContainerConfigError"}),
}


def _job(name: str, edit: dict[str, Any]) -> dict[str, Any]:
    job = yaml.safe_load((ROOT / "examples" / "tiny-chat-k8s.yaml").read_text())
    job["metadata"] = {"name": name, "namespace": NAMESPACE}
    spec = job["spec"]
    spec["resources"].update(nodes=1, maxNodes=1)
    spec["output"] = {}  # no claim to wait for: only the case's problem keeps the pod back
    spec.update(edit)
    return job


def _seen_stuck(cluster: Cluster, name: str) -> dict[str, Any] | None:
    job = cluster.get("ftj", name, "-n", NAMESPACE)
    stuck = condition(job, "PodsStuck")
    return job if stuck and stuck["status"] == "True" else None


@pytest.fixture(scope="module")
def stuck(cluster: Cluster, operator_release: str) -> Iterator[dict[str, dict[str, Any]]]:
    for namespace in (NAMESPACE, OTHER_NAMESPACE):
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true",
                        timeout=180)
        cluster.restricted_namespace(namespace)
    cluster.kubectl("-n", OTHER_NAMESPACE, "create", "secret", "generic", "foreign-token",
                    "--from-literal=token=hf_not_yours")
    for name, (edit, _) in CASES.items():
        cluster.apply_text(yaml.safe_dump(_job(name, edit)))
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 3 * DEADLINE  # long enough to report a slow one
    while len(seen) < len(CASES) and time.monotonic() < deadline:
        for name in CASES.keys() - seen.keys():
            if job := _seen_stuck(cluster, name):
                seen[name] = {"job": job, "at": time.time()}
        time.sleep(1)
    yield seen
    for namespace in (NAMESPACE, OTHER_NAMESPACE):
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _created(job: dict[str, Any]) -> float:
    stamp = job["metadata"]["creationTimestamp"].replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_stuck_pod_is_named_within_a_minute(cluster: Cluster, stuck: dict, name: str) -> None:
    assert name in stuck, cluster.diagnostics(NAMESPACE)
    job, at = stuck[name]["job"], stuck[name]["at"]
    print(f"{name}: PodsStuck {at - _created(job):.0f} s after the job's creation")
    assert at - _created(job) <= DEADLINE, f"PodsStuck after {at - _created(job):.0f} s"
    reasons = CASES[name][1]
    assert condition(job, "PodsStuck")["reason"] in reasons
    assert job["status"]["phase"] == "Pending"  # waits, named: never Failed for this
    message = job["status"]["message"]
    assert "container trainer" in message and "(pod " in message, message
    warnings = {e["reason"] for e in cluster.events(NAMESPACE, name) if e["type"] == "Warning"}
    assert warnings & reasons, warnings


def test_a_job_cannot_use_a_secret_of_another_namespace(cluster: Cluster, stuck: dict) -> None:
    """The pod asks for foreign-token in its own namespace, where there is none; the kubelet
    never hands it the Secret of the same name in the other namespace."""
    assert "foreign-secret" in stuck, cluster.diagnostics(NAMESPACE)
    message = stuck["foreign-secret"]["job"]["status"]["message"]
    assert 'secret "foreign-token" not found' in message, message
    assert f"namespace {NAMESPACE}" in message, message
    pods = cluster.get("pods", "-n", NAMESPACE, "-l", "finetune.dev/job=foreign-secret")
    states = [s.get("state", {}) for p in pods["items"]
              for s in p["status"].get("containerStatuses", [])]
    assert states and not [s for s in states if "running" in s or "terminated" in s], states
