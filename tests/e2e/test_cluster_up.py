"""`make cluster-up` on a cluster that is already running does nothing."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT
from tests.e2e.cluster import CLUSTER_STATE, Cluster

pytestmark = [pytest.mark.cluster]

PARTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd",
         "coredns", "kubelet", "kube-proxy")


def _pids() -> dict[str, str]:
    return {p: (CLUSTER_STATE / "pids" / f"{p}.pid").read_text().strip() for p in PARTS}


def test_cluster_up_on_a_running_cluster_changes_nothing(cluster: Cluster) -> None:
    before = _pids()
    out = subprocess.run(["bash", str(ROOT / "scripts" / "cluster" / "up.sh")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "already running" in out.stderr
    assert _pids() == before
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
