"""The local cluster's scripts and Go modules, checked without starting anything.

shellcheck lints every script; the versions the scripts use are the ones the Go modules pin;
and every Kubernetes staging module is replaced by its release of the same minor version
(a dependent module cannot see k8s.io/kubernetes' own ./staging replacements).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

CLUSTER = ROOT / "scripts" / "cluster"
SCRIPTS = sorted(CLUSTER.glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script: Path) -> None:
    shellcheck = require_tool("shellcheck")
    out = subprocess.run([shellcheck, "-x", "-P", str(CLUSTER), str(script)], check=False,
                         capture_output=True, text=True, timeout=60, cwd=CLUSTER)
    assert out.returncode == 0, out.stdout + out.stderr


def _sourced_versions() -> dict[str, str]:
    script = (f"source {CLUSTER / 'versions.sh'}; "
              "echo $KUBERNETES_VERSION $ETCD_VERSION $COREDNS_VERSION $KUEUE_VERSION")
    out = subprocess.run(["bash", "-c", script],
                         check=True, capture_output=True, text=True, timeout=30)
    kubernetes, etcd, coredns, kueue = out.stdout.split()
    return {"k8s.io/kubernetes": kubernetes, "go.etcd.io/etcd/server/v3": etcd,
            "github.com/coredns/coredns": coredns, "sigs.k8s.io/kueue": kueue}


def _required(go_mod: Path) -> dict[str, str]:
    text = go_mod.read_text()
    return dict(re.findall(r"^(?:require )?\s*([\w./-]+) (v[\w.+-]+)", text, re.MULTILINE))


def test_scripts_use_the_versions_the_go_modules_pin() -> None:
    required = {**_required(CLUSTER / "components" / "go.mod"),
                **_required(CLUSTER / "coredns" / "go.mod"),
                **_required(CLUSTER / "kueue" / "go.mod")}
    for module, version in _sourced_versions().items():
        assert version and required[module] == version, module


def test_every_staging_module_is_replaced_by_its_release() -> None:
    text = (CLUSTER / "components" / "go.mod").read_text()
    kubernetes = _sourced_versions()["k8s.io/kubernetes"]
    release = "v0." + kubernetes.removeprefix("v1.")
    replaced = dict(re.findall(r"^\s+(k8s\.io/[\w-]+) v0\.0\.0 => \1 (v[\w.]+)$", text,
                               re.MULTILINE))
    assert len(replaced) >= 30
    assert set(replaced.values()) == {release}
    for module in ("k8s.io/api", "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/kubelet"):
        assert module in replaced
    tools = re.search(r"^tool \((.*?)^\)", text, re.MULTILINE | re.DOTALL).group(1).split()
    assert set(tools) == {f"k8s.io/kubernetes/cmd/{c}" for c in (
        "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
        "kube-proxy")} | {"go.etcd.io/etcd/server/v3"}


def _lib(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "CLUSTER_STATE": str(tmp_path / "state"),
           "CLUSTER_CACHE": str(tmp_path / "cache"), "CLUSTER_RUN": str(tmp_path / "run")}
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source {CLUSTER / 'lib.sh'}; "
                           + script], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_a_part_that_exits_at_start_is_named_with_its_log(tmp_path: Path) -> None:
    out = _lib(tmp_path, "start etcd bash -c 'echo bad flag >&2; exit 3'; "
                         "wait_for etcd 20 false")
    assert out.returncode != 0
    log = tmp_path / "state" / "logs" / "etcd.log"
    assert f"etcd exited during start-up; read {log}" in out.stderr
    assert "bad flag" in out.stderr  # the log's tail is shown too


def test_a_part_that_never_gets_ready_is_named_with_its_log(tmp_path: Path) -> None:
    out = _lib(tmp_path, "start kubelet sleep 30; wait_for kubelet 1 false")
    assert out.returncode != 0
    assert "kubelet did not become ready within 1s; read" in out.stderr
    _lib(tmp_path, "stop kubelet")


def test_the_kueue_module_names_the_manager_it_builds() -> None:
    text = (CLUSTER / "kueue" / "go.mod").read_text()
    assert re.search(r"^tool sigs\.k8s\.io/kueue/cmd/kueue$", text, re.MULTILINE)
    assert not re.search(r"^replace", text, re.MULTILINE)  # sigs.k8s.io/kueue needs none
    assert "sigs.k8s.io/kueue/cmd/kueue" in (CLUSTER / "build-kueue.sh").read_text()
