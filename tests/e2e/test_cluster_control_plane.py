"""Control-plane faults on the real cluster (issue 20): kube-apiserver restarted, etcd
restarted, and the operator pod killed with SIGKILL, each in the middle of a burst of 50
FineTuneJobs. Every job reaches its state and has exactly one set of children (a ConfigMap,
a Service, a Job), and no child is left without its job.

The jobs are suspended (runPolicy.suspend): the operator plans them and creates their
children, and no pod runs, so the burst costs the machine nothing but the operator's work.
The first half is created, the fault starts, and the second half is applied while it lasts
(kubectl apply again until the API server takes all of it).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.cluster import RELEASE, Cluster, wait_until
from tests.e2e.conftest import wait_for_webhook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BURST = 50
RESTART_SH = ROOT / "scripts" / "cluster" / "restart.sh"
TINY = ROOT / "examples" / "tiny-chat-k8s.yaml"


def _restart(component: str) -> None:
    done = subprocess.run(["bash", str(RESTART_SH), component, "3"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def _kill_operator(cluster: Cluster, operator_namespace: str) -> None:
    cluster.kubectl("-n", operator_namespace, "delete", "pod", "-l",
                    "app.kubernetes.io/component=operator", "--grace-period=0", "--force",
                    "--wait=false")


FAULTS = ("kube-apiserver", "etcd", "operator")


def _jobs(namespace: str, names: list[str]) -> str:
    base = yaml.safe_load(TINY.read_text())
    base["spec"]["output"] = {}
    base["spec"]["runPolicy"] = {"suspend": True}
    items = [{**base, "metadata": {"name": name, "namespace": namespace}} for name in names]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def _apply_until_taken(cluster: Cluster, manifest: str, timeout: float = 300) -> int:
    """kubectl apply until every object is taken; how many tries that took."""
    deadline, tries = time.monotonic() + timeout, 0
    while True:
        tries += 1
        if cluster.apply_text(manifest, check=False).ok:
            return tries
        assert time.monotonic() < deadline, "the API server never took the second half"
        time.sleep(1)


def _suspended(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    jobs = cluster.kubectl("get", "ftj", "-n", namespace, "-o", "json", check=False)
    if not jobs.ok:
        return None
    items = json.loads(jobs.stdout)["items"]
    phases = Counter(j.get("status", {}).get("phase") for j in items)
    return {"jobs": items} if len(items) == BURST and phases["Suspended"] == BURST else None


@pytest.fixture(scope="module", params=FAULTS)
def burst(request, cluster: Cluster, operator_release: str) -> dict[str, Any]:
    fault = request.param
    namespace = f"ftj-burst-{fault}"
    cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true",
                    timeout=300)
    cluster.restricted_namespace(namespace)
    names = [f"burst-{i:02d}" for i in range(BURST)]
    cluster.apply_text(_jobs(namespace, names[:BURST // 2]))
    started = time.monotonic()
    act = (lambda: _kill_operator(cluster, operator_release)) if fault == "operator" \
        else (lambda: _restart(fault))
    failure: list[Exception] = []

    def run_fault() -> None:
        try:
            act()
        except (AssertionError, subprocess.SubprocessError, OSError) as err:  # for the test
            failure.append(err)

    thread = threading.Thread(target=run_fault)
    thread.start()
    time.sleep(1)  # the component is stopping (the restart keeps it down 3 s): into the gap
    tries = _apply_until_taken(cluster, _jobs(namespace, names[BURST // 2:]))
    thread.join(timeout=300)
    assert not failure, failure
    if fault == "operator":
        cluster.kubectl("-n", operator_release, "rollout", "status",
                        f"deployment/{RELEASE}", "--timeout=180s")
    wait_for_webhook(cluster)  # for this module's next fault, and the tests after it
    state = wait_until(f"all {BURST} jobs Suspended after the {fault} fault",
                       lambda: _suspended(cluster, namespace), 300, interval=2,
                       on_timeout=lambda: cluster.diagnostics(namespace))
    state["children"] = {kind: cluster.get(kind, "-n", namespace)["items"]
                         for kind in ("configmaps", "services", "jobs")}
    state["seconds"] = time.monotonic() - started
    print(f"{fault}: {BURST} jobs Suspended {state['seconds']:.0f} s after the fault began; "
          f"the second half was applied in {tries} tries")
    yield state
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_every_job_reaches_its_state_with_exactly_one_set_of_children(burst) -> None:
    uids = {j["metadata"]["uid"]: j["metadata"]["name"] for j in burst["jobs"]}
    owned: Counter[tuple[str, str]] = Counter()
    for kind, items in burst["children"].items():
        for obj in items:
            owners = [r["uid"] for r in obj["metadata"].get("ownerReferences", [])]
            if kind == "configmaps" and not owners:
                continue  # kube-root-ca.crt: the namespace's own
            assert len(owners) == 1 and owners[0] in uids, (kind, obj["metadata"]["name"])
            owned[(uids[owners[0]], kind)] += 1
    expected = {(name, kind): 1 for name in uids.values()
                for kind in ("configmaps", "services", "jobs")}
    assert dict(owned) == expected


def test_no_job_restarted_and_every_job_is_suspended(burst) -> None:
    for job in burst["jobs"]:
        status = job["status"]
        assert status.get("restarts", 0) == 0, job["metadata"]["name"]
        assert status["activeJob"] == f"{job['metadata']['name']}-r0"
