"""`helm install` on the real cluster: the operator pod becomes Ready under the chart's own
ServiceAccount and RBAC, and its metrics Service serves it."""

from __future__ import annotations

import pytest

from tests.e2e.cluster import RELEASE, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _operator_pod(cluster: Cluster, namespace: str) -> dict:
    pods = cluster.get("pods", "-n", namespace, "-l",
                       f"app.kubernetes.io/instance={RELEASE},"
                       "app.kubernetes.io/component=operator")["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    return running[0]


def test_operator_pod_is_ready_with_the_charts_service_account(cluster: Cluster,
                                                               operator_release: str) -> None:
    pod = _operator_pod(cluster, operator_release)
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready.get("Ready") == "True", pod["status"]
    service_account = pod["spec"]["serviceAccountName"]
    assert service_account == RELEASE
    sa = cluster.get("serviceaccount", service_account, "-n", operator_release)
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    binding = cluster.get("clusterrolebinding", RELEASE)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": RELEASE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service_account,
                                    "namespace": operator_release}]
    # The image's numeric non-root user, as the restricted profile asks.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_metrics_service_selects_the_operator_and_serves_its_metrics(
        cluster: Cluster, operator_release: str) -> None:
    pod = _operator_pod(cluster, operator_release)
    slices = cluster.get("endpointslices", "-n", operator_release, "-l",
                         f"kubernetes.io/service-name={RELEASE}-metrics")["items"]
    addresses = {a for s in slices for e in s.get("endpoints") or []
                 for a in e["addresses"] if e.get("conditions", {}).get("ready")}
    assert addresses == {pod["status"]["podIP"]}
    # Through the API server's service proxy, as a Prometheus in the cluster would reach it.
    text = cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{operator_release}/services/"
                           f"http:{RELEASE}-metrics:metrics/proxy/metrics").stdout
    assert "finetune_operator_" in text
