"""Fixtures of the real-cluster tests: the running cluster and the chart installed on it.

The cluster comes from `make cluster-up` (.ci/run starts it). Without it these tests skip,
except in CI, where a missing cluster is a broken setup and fails them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import IN_CI, ROOT, require_tool
from tests.e2e.cluster import (
    CHART,
    HUB_ENDPOINT,
    KUBECONFIG,
    OPERATOR_NAMESPACE,
    RELEASE,
    Cluster,
    hub_service_manifest,
    wait_until,
)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kube = Cluster(kubectl_bin=require_tool("kubectl"), helm_bin=require_tool("helm"))
    if not KUBECONFIG.exists() or not kube.kubectl("get", "--raw", "/readyz",
                                                   check=False).ok:
        message = f"no local cluster at {KUBECONFIG}: run `make cluster-up`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return kube


@pytest.fixture(scope="session")
def operator_release(cluster: Cluster) -> Iterator[str]:
    """`helm install` of the chart with the locally built images; yields the namespace."""
    # The Hub mirror the chart's operator.hfEndpoint names (the stand-in behind a Service).
    cluster.apply_text(json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": OPERATOR_NAMESPACE}}))
    cluster.apply_text(hub_service_manifest())
    # helm's own deadline comes first, so that a failure reports what helm saw, then the pods.
    installed = cluster.helm("upgrade", "--install", RELEASE, str(CHART),
                             "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
                             "-f", str(CHART / "ci" / "kind-values.yaml"),
                             # Sizing and training pods ask the Hub stand-in (the sizing
                             # and Hub tests) through its Service.
                             "--set", f"operator.hfEndpoint={HUB_ENDPOINT}",
                             "--wait", "--timeout", "5m", check=False, timeout=420)
    if not installed.ok:
        pytest.fail(f"helm install failed:\n{installed.stderr}{installed.stdout}\n"
                    f"{cluster.diagnostics(OPERATOR_NAMESPACE)}", pytrace=False)
    # An upgrade with the same tag keeps the old pod: make sure the current image runs.
    deployment = f"deployment/{RELEASE}"
    cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "restart", deployment)
    cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", deployment,
                    "--timeout=180s")
    wait_for_webhook(cluster)
    yield OPERATOR_NAMESPACE
    cluster.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait",
                 check=False)


def job_phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    obj = cluster.kubectl("get", "ftj", name, "-n", namespace, "-o",
                          "jsonpath={.status.phase}", check=False)
    return obj.stdout.strip() or None if obj.ok else None


def wait_for_phase(cluster: Cluster, namespace: str, name: str, phases: set[str],
                   timeout: float) -> str:
    return wait_until(f"FineTuneJob {namespace}/{name} to reach {sorted(phases)}",
                      lambda: (p if (p := job_phase(cluster, namespace, name)) in phases
                               else None),
                      timeout, on_timeout=lambda: cluster.diagnostics(namespace))


WEBHOOK_DENIED = 'admission webhook "validate.finetunejobs.finetune.dev" denied the request'


def wait_for_webhook(cluster: Cluster, timeout: float = 120) -> None:
    """Until the API server reaches the admission webhook: a server-side dry run of a job it
    refuses (the CRD lets a CPU request in words through) is denied by it. A pod just Ready
    is not enough: kube-proxy refuses connections to the Service until it has synced the
    pod's endpoint."""
    job = yaml.safe_load((ROOT / "examples" / "tiny-chat-k8s.yaml").read_text())
    job["metadata"] = {"name": "webhook-probe", "namespace": "default"}
    job["spec"]["resources"]["cpu"] = "a lot"
    wait_until("the admission webhook to answer", lambda: WEBHOOK_DENIED in cluster.apply_text(
        json.dumps(job), "--dry-run=server", check=False).stderr, timeout, interval=1,
        on_timeout=lambda: cluster.diagnostics(OPERATOR_NAMESPACE))
