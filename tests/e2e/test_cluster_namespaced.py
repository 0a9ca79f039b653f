"""Namespaced mode on the real cluster (issue 20): a second release of the chart with
operator.watchNamespaces runs with Roles only, runs a job in the namespace it watches to
Succeeded, and leaves a job in another namespace untouched: no status, no children.

The cluster-wide operator of the session (operator_release) is scaled to zero meanwhile, so
that only the namespaced one can act; it comes back when the module ends. Both namespaces
are outside the cluster-wide release's webhook (its CI values skip namespaces labelled
finetune.dev/webhook=off), which is down while it is scaled to zero."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.cluster import CHART, OPERATOR_NAMESPACE, RELEASE, Cluster
from tests.e2e.conftest import job_phase, wait_for_phase, wait_for_webhook

pytestmark = [pytest.mark.cluster]

NAMESPACED_RELEASE = "ftj-namespaced"
NAMESPACED_OPERATOR = "ftj-namespaced-system"
WATCHED, UNWATCHED = "ftj-ns-watched", "ftj-ns-unwatched"
WEBHOOK_OFF = {"finetune.dev/webhook": "off"}
RUN_TIMEOUT = 420
LEFT_ALONE_FOR = 30  # seconds a job in the unwatched namespace must stay untouched


def _job(namespace: str) -> dict[str, Any]:
    job = yaml.safe_load((ROOT / "examples" / "tiny-chat-k8s.yaml").read_text())
    job["metadata"] = {"name": "tiny", "namespace": namespace}
    job["spec"]["resources"].update(nodes=1, maxNodes=1)
    job["spec"]["training"]["maxSteps"] = 4
    job["spec"]["output"] = {}
    return job


def _namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true",
                    timeout=180)
    cluster.restricted_namespace(name)
    cluster.kubectl("label", "namespace", name, *[f"{k}={v}" for k, v in WEBHOOK_OFF.items()])


def _scale_cluster_wide_operator(cluster: Cluster, replicas: int) -> None:
    deployment = f"deployment/{RELEASE}"
    cluster.kubectl("-n", OPERATOR_NAMESPACE, "scale", deployment, f"--replicas={replicas}")
    if replicas:
        cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", deployment,
                        "--timeout=180s")
        wait_for_webhook(cluster)
    else:
        cluster.kubectl("-n", OPERATOR_NAMESPACE, "wait", "--for=delete", "pod",
                        f"--selector=app.kubernetes.io/instance={RELEASE}", "--timeout=120s",
                        check=False)


@pytest.fixture(scope="module")
def namespaced(cluster: Cluster, operator_release: str) -> Iterator[str]:
    """The namespaced release, installed; yields its service account's user name."""
    for name in (WATCHED, UNWATCHED):
        _namespace(cluster, name)
    _scale_cluster_wide_operator(cluster, 0)
    try:
        installed = cluster.helm(
            "upgrade", "--install", NAMESPACED_RELEASE, str(CHART), "--namespace",
            NAMESPACED_OPERATOR, "--create-namespace", "--skip-crds",
            "-f", str(CHART / "ci" / "kind-values.yaml"), "--set", "webhook.enabled=false",
            "--set-json", f"operator.watchNamespaces={json.dumps([WATCHED])}",
            "--wait", "--timeout", "4m", check=False, timeout=300)
        assert installed.ok, (f"{installed.stderr}{installed.stdout}\n"
                              f"{cluster.diagnostics(NAMESPACED_OPERATOR)}")
        deployments = cluster.get("deployments", "-n", NAMESPACED_OPERATOR)["items"]
        account = deployments[0]["spec"]["template"]["spec"]["serviceAccountName"]
        yield f"system:serviceaccount:{NAMESPACED_OPERATOR}:{account}"
    finally:
        cluster.helm("uninstall", NAMESPACED_RELEASE, "--namespace", NAMESPACED_OPERATOR,
                     "--wait", check=False, timeout=300)
        for name in (WATCHED, UNWATCHED, NAMESPACED_OPERATOR):
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
        _scale_cluster_wide_operator(cluster, 1)


def test_the_namespaced_operator_holds_roles_only(cluster: Cluster, namespaced: str) -> None:
    account = namespaced.rsplit(":", 1)[1]
    bindings = cluster.get("clusterrolebindings")["items"]
    bound = [b["metadata"]["name"] for b in bindings
             if any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                    and s.get("namespace") == NAMESPACED_OPERATOR
                    for s in b.get("subjects") or [])]
    assert bound == [], f"cluster-wide bindings of the namespaced operator: {bound}"

    def may(verb: str, namespace: str) -> bool:
        said = cluster.kubectl("auth", "can-i", verb, "finetunejobs.finetune.dev", "-n",
                               namespace, "--as", namespaced, check=False)
        return said.stdout.strip() == "yes"

    assert may("watch", WATCHED) and may("patch", WATCHED)
    assert not may("list", UNWATCHED) and not may("patch", UNWATCHED)
    assert not may("list", "default")


def test_a_job_in_the_watched_namespace_runs_and_one_elsewhere_is_left_alone(
        cluster: Cluster, namespaced: str) -> None:
    cluster.apply_text(json.dumps(_job(WATCHED)))
    cluster.apply_text(json.dumps(_job(UNWATCHED)))
    started = time.monotonic()
    wait_for_phase(cluster, WATCHED, "tiny", {"Running", "Succeeded", "Failed"}, RUN_TIMEOUT)
    time.sleep(max(0.0, LEFT_ALONE_FOR - (time.monotonic() - started)))
    untouched = cluster.get("ftj", "tiny", "-n", UNWATCHED)
    assert "status" not in untouched or not untouched["status"], untouched["status"]
    assert "finalizers" not in untouched["metadata"], untouched["metadata"]
    for kind in ("jobs", "configmaps", "services"):
        owned = [o["metadata"]["name"] for o in cluster.get(kind, "-n", UNWATCHED)["items"]
                 if o["metadata"].get("ownerReferences")]
        assert owned == [], f"{kind} made in the unwatched namespace: {owned}"
    assert wait_for_phase(cluster, WATCHED, "tiny", {"Succeeded", "Failed"},
                          RUN_TIMEOUT) == "Succeeded", cluster.diagnostics(WATCHED)
    assert job_phase(cluster, UNWATCHED, "tiny") is None
