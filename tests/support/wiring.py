"""Helpers of the wiring tests: the operator under kopf against the emulated API server, and
a small client that plays the cluster's controllers (pods, Job status) over HTTP."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
from finetune_contract import api
from kopf.testing import KopfRunner
from kubernetes.config import kube_config

from tests.support.emulator import EmulatorThread, running_emulator

OPERATOR_ARGS = ["run", "--all-namespaces", "--standalone", "-m", "finetune_operator.main"]
WAIT_SECONDS = 20.0
# Pods' metrics endpoints default to a closed loopback port: refused at once, never a hang.
CLOSED_PORT = 9


@contextlib.contextmanager
def emulated_cluster(tmp: Path) -> Iterator[EmulatorThread]:
    """An emulated API server, with KUBECONFIG pointing at it for kopf and the client."""
    with running_emulator() as emulator:
        previous = os.environ.get("KUBECONFIG")
        config = str(emulator.write_kubeconfig(tmp / "kubeconfig.yaml"))
        os.environ["KUBECONFIG"] = config
        # The client reads KUBECONFIG once, when first imported; kopf's login uses that.
        default_location = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = config
        kubernetes.config.load_kube_config(config_file=config)
        try:
            yield emulator
        finally:
            kube_config.KUBE_CONFIG_DEFAULT_LOCATION = default_location
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous


@contextlib.contextmanager
def running_operator() -> Iterator[KopfRunner]:
    with KopfRunner(OPERATOR_ARGS) as runner:
        yield runner
    assert runner.exception is None, runner.output[-4000:]


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_SECONDS,
             detail: Callable[[], Any] | None = None) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r}, "
                         f"{detail() if detail else ''})")


class Kube:
    """The API calls the tests make, on plain dicts."""

    def __init__(self) -> None:
        client = kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    # FineTuneJobs
    def apply(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND,
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace,
                                                    api.PLURAL, body)

    def ftj(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(lambda: self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name))

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return (self.ftj(namespace, name) or {}).get("status") or {}

    def patch_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(api.GROUP, api.VERSION, namespace,
                                                   api.PLURAL, name, {"spec": spec})

    def delete_all(self, namespace: str) -> None:
        listing = self.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace,
                                                            api.PLURAL)
        for item in listing.get("items", []):
            self.delete_ftj(namespace, item["metadata"]["name"])

    def delete_ftj(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace,
                                                    api.PLURAL, name)

    def wait_phase(self, namespace: str, name: str, phase: str) -> dict[str, Any]:
        return wait_for(f"{namespace}/{name} phase {phase}",
                        lambda: (s := self.status(namespace, name)).get("phase") == phase and s,
                        detail=lambda: self.status(namespace, name))

    # children
    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(lambda: self.batch.read_namespaced_job(name, namespace))

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(lambda: self.core.read_namespaced_config_map(name, namespace))

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(lambda: self.core.read_namespaced_service(name, namespace))

    # the Job controller and the kubelet, played by the test
    def start_pods(self, namespace: str, job: dict[str, Any], *, pod_ip: str = "127.0.0.1",
                   metrics_port: int = CLOSED_PORT, phase: str = "Running") -> list[str]:
        name = job["metadata"]["name"]
        owner_job = job["metadata"]["labels"]["finetune.dev/job"]
        names = []
        for index in range(job["spec"]["completions"]):
            pod_name = f"{name}-{index}-{uuid.uuid4().hex[:5]}"
            template = job["spec"]["template"]["spec"]["containers"][0]
            self.core.create_namespaced_pod(namespace, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "labels": {
                    "batch.kubernetes.io/job-name": name, "finetune.dev/job": owner_job,
                    "app.kubernetes.io/name": "finetune-trainer"},
                    "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
                "spec": {"containers": [{"name": "trainer", "image": template["image"],
                                         "ports": [{"name": "metrics",
                                                    "containerPort": metrics_port}]}]},
            })
            self.set_pod_status(namespace, pod_name, {"phase": phase, "podIP": pod_ip})
            names.append(pod_name)
        return names

    def set_pod_status(self, namespace: str, pod: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod, namespace, {"status": status})

    def fail_pod(self, namespace: str, pod: str, reason: str, exit_code: int) -> None:
        self.set_pod_status(namespace, pod, {"phase": "Failed", "containerStatuses": [{
            "name": "trainer", "image": "trainer", "imageID": "", "ready": False,
            "restartCount": 0, "state": {"terminated": {
                "reason": reason, "exitCode": exit_code,
                "finishedAt": "2026-11-01T12:00:00Z"}}}]})

    def set_job_status(self, namespace: str, job: str, status: dict[str, Any]) -> None:
        self.batch.patch_namespaced_job_status(job, namespace, {"status": status})

    @staticmethod
    def _get(call: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            result = call()
        except kubernetes.client.ApiException as err:
            if err.status == 404:
                return None
            raise
        if isinstance(result, dict):
            return result
        return kubernetes.client.ApiClient().sanitize_for_serialization(result)
