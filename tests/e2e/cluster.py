"""Drives the local cluster the way a user does: kubectl and helm as subprocesses.

`make cluster-up` starts the cluster (scripts/cluster/up.sh); its admin kubeconfig sits at a
fixed path. Nothing here talks to the API server except through kubectl and helm.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import ROOT

CLUSTER_STATE = Path(os.environ.get("CLUSTER_STATE", "/var/lib/finetune-cluster"))
KUBECONFIG = CLUSTER_STATE / "kubeconfig"
CHART = ROOT / "charts" / "finetune-operator"
RELEASE = "finetune-operator"
OPERATOR_NAMESPACE = "finetune-system"

T = TypeVar("T")


def cluster_setting(name: str) -> str:
    """A value scripts/cluster/versions.sh sets (NODE_IP, ...): one source for both."""
    for line in (ROOT / "scripts" / "cluster" / "versions.sh").read_text().splitlines():
        key, _, rest = line.partition("=")
        if key == name:
            return rest.split("#")[0].strip()
    raise KeyError(f"{name} is not set in scripts/cluster/versions.sh")


# The node as its pods see it (the CNI bridge's address): test servers that pods must reach
# listen here. The Hub stand-in of the sizing and Hub tests listens on HUB_PORT.
NODE_IP = cluster_setting("NODE_IP")
HUB_PORT = 18080
# The pods reach the stand-in as they would a Hub mirror of the cluster: by a Service's DNS
# name (CoreDNS), its ClusterIP (kube-proxy), and an EndpointSlice naming the node's address.
HUB_SERVICE = "hub-mirror"
HUB_ENDPOINT = f"http://{HUB_SERVICE}.{OPERATOR_NAMESPACE}.svc.cluster.local"


def hub_service_manifest() -> str:
    """The Service in front of the stand-in: no selector, one EndpointSlice to the node."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": HUB_SERVICE, "namespace": OPERATOR_NAMESPACE},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": HUB_PORT}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{HUB_SERVICE}-node", "namespace": OPERATOR_NAMESPACE,
                      "labels": {"kubernetes.io/service-name": HUB_SERVICE}},
         "addressType": "IPv4",
         "ports": [{"name": "http", "port": HUB_PORT, "protocol": "TCP"}],
         "endpoints": [{"addresses": [NODE_IP]}]},
    ]})


class CommandFailed(AssertionError):
    """A kubectl or helm call that the test expected to succeed did not."""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# A namespace labelled <this>=off is not checked by the webhook (the chart's CI values).
WEBHOOK_OFF_LABEL = "finetune.dev/webhook"


@dataclass(frozen=True)
class Cluster:
    kubectl_bin: str
    helm_bin: str
    kubeconfig: Path = KUBECONFIG

    def _env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(self, tool: str, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 300) -> Result:
        binary = {"kubectl": self.kubectl_bin, "helm": self.helm_bin}[tool]
        try:
            done = subprocess.run([binary, *args], input=stdin, capture_output=True,
                                  text=True, env=self._env(), timeout=timeout, check=False)
        except subprocess.TimeoutExpired as stuck:
            raise CommandFailed(f"{tool} {' '.join(args)} still ran after {timeout:.0f}s:\n"
                                f"{_text(stuck.stderr)}{_text(stuck.stdout)}") from None
        result = Result(done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            raise CommandFailed(f"{tool} {' '.join(args)} exited {done.returncode}:\n"
                                f"{done.stderr[-3000:]}{done.stdout[-2000:]}")
        return result

    def kubectl(self, *args: str, **kwargs: Any) -> Result:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> Result:
        return self.run("helm", *args, **kwargs)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply_text(self, manifest: str, *args: str, check: bool = True) -> Result:
        return self.kubectl("apply", *args, "-f", "-", stdin=manifest, check=check)

    def restricted_namespace(self, name: str) -> None:
        """A namespace that enforces the Pod Security Standard "restricted"."""
        self.apply_text(json.dumps({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest"}}}))

    def fresh_namespace_with_token(self, name: str, token: str) -> None:
        """A new restricted namespace (an old one of the name deleted first) holding the
        Secret hf-token, key token: what a job's secrets.hfToken names."""
        self.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true",
                     timeout=180)
        self.restricted_namespace(name)
        self.kubectl("-n", name, "create", "secret", "generic", "hf-token",
                     f"--from-literal=token={token}")

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.get("events", "-n", namespace,
                         "--field-selector", f"involvedObject.name={name}")["items"]
        return items

    def diagnostics(self, namespace: str) -> str:
        """What to read when a test fails: the node, jobs, pods, events and the operator's log."""
        parts = []
        for args in (("describe", "nodes"),
                     ("get", "pods", "-A", "-o", "wide"),
                     ("get", "ftj,jobs", "-n", namespace, "-o", "wide"),
                     ("describe", "pods", "-n", namespace),
                     ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
                     ("logs", "-n", namespace, "-l", "app.kubernetes.io/name=finetune-trainer",
                      "--tail=40", "--prefix"),
                     ("logs", "-n", OPERATOR_NAMESPACE, "-l",
                      "app.kubernetes.io/component=operator", "--tail=60")):
            out = self.kubectl(*args, check=False)
            parts.append(f"$ kubectl {' '.join(args)}\n{out.stdout}{out.stderr}")
        return "\n".join(parts)


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def wait_until(what: str, probe: Callable[[], T | None], timeout: float,
               interval: float = 1.0, on_timeout: Callable[[], str] | None = None) -> T:
    """Polls `probe` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == kind:
            return cond
    return None
