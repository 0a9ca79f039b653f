"""The operator killed with SIGKILL between creating any two children of a job, and once
between its last child and the status write: a new operator process finishes the job's
setup without creating anything twice.

The moment is made exact by holding the operator's next API request (kube_faults: the request
hangs at the emulator) and killing the process while it waits. In the "lost answer" case the
API applied the request but the answer never arrived.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ftj_samples import spec_dict
from tests.support.kube_faults import (
    HANG,
    Faults,
    OperatorProcess,
    creations,
    finetunejobs,
    short_request_log,
    stored,
)
from tests.support.wiring import Kube, emulated_cluster, wait_for

TWO_NODES = {"gpu": "cpu", "gpusPerNode": 2, "nodes": 2, "maxNodes": 2, "strategy": "ddp"}
ENV = {"FINETUNE_RESYNC_INTERVAL": "1"}
WAIT = 30.0
CHILDREN = [("configmaps", "chat-trainer"), ("services", "chat"), ("jobs", "chat-r0")]

# (id, method, path under the namespace, committed, children present when killed)
KILL_POINTS = [
    ("after-configmap", "POST", "/api/v1/namespaces/{ns}/services", False, 1),
    ("after-service", "POST", "/apis/batch/v1/namespaces/{ns}/jobs", False, 2),
    ("job-created-answer-lost", "POST", "/apis/batch/v1/namespaces/{ns}/jobs", True, 3),
    ("before-status", "PATCH",
     "/apis/finetune.dev/v1alpha1/namespaces/{ns}/finetunejobs/chat/status", False, 3),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("kube")
    with short_request_log(), emulated_cluster(tmp) as emulator:
        faults = Faults(emulator)
        try:
            yield {"emulator": emulator, "faults": faults, "kube": Kube(), "tmp": tmp}
        finally:
            faults.clear()


@pytest.mark.reliability
@pytest.mark.parametrize("point,method,path,committed,present", KILL_POINTS,
                         ids=[p[0] for p in KILL_POINTS])
def test_operator_killed_mid_setup_creates_nothing_twice_after_restart(
        cluster, point, method, path, committed, present):
    emulator, faults, kube, tmp = (cluster[k] for k in ("emulator", "faults", "kube", "tmp"))
    ns = f"kill-{point}"
    held = faults.add(method, path.format(ns=ns), HANG, times=1, committed=committed)
    first = OperatorProcess(tmp / "kubeconfig.yaml", tmp / f"{point}-1.log", ENV)
    try:
        kube.apply(ns, "chat", spec_dict(resources=TWO_NODES))
        wait_for("the operator's request to be held", lambda: held.served, timeout=WAIT)
    finally:
        first.kill()
    faults.clear()  # the held request answers a dead client; the API behaves again
    assert sum(creations(emulator, p, ns, n) for p, n in CHILDREN) == present
    second = OperatorProcess(tmp / "kubeconfig.yaml", tmp / f"{point}-2.log", ENV)
    try:
        wait_for("the job set up by the new operator", lambda: (
            (finetunejobs(emulator, ns)["chat"].get("status") or {}).get("phase") == "Pending"
            and all(creations(emulator, p, ns, n) for p, n in CHILDREN)), timeout=WAIT)
        status = finetunejobs(emulator, ns)["chat"]["status"]
    finally:
        second.kill()
    for plural, name in CHILDREN:
        assert creations(emulator, plural, ns, name) == 1, (plural, name)
        assert [o["metadata"]["name"] for o in stored(emulator, plural, ns)] == [name]
    assert status["restarts"] == 0 and status["activeJob"] == "chat-r0"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Valid": "True", "Planned": "True", "Created": "True",
        "OutputPersisted": "False"}
