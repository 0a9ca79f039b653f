"""Every generated hostile job (tests/support/hostile_jobs.py) against the real API server and
the operator the chart installed.

Each case is created with `kubectl create` (no last-applied annotation, so a near-megabyte job
is stored as it is). The server refuses what the CRD's schema and rules express, naming the
field; every case it stores must end Failed by the operator, with no child left behind. All
the while the operator pod must not restart, and must log no traceback and no token.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.e2e.cluster import RELEASE, WEBHOOK_OFF_LABEL, Cluster, wait_until
from tests.support.hostile_jobs import TOKEN, all_cases, k8s_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "ftj-hostile"
CASES = all_cases()
NAMES = {case.id: k8s_name(case.id) for case in CASES}


def _manifest(case_id: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
                       "metadata": {"name": NAMES[case_id], "namespace": NAMESPACE},
                       "spec": spec})


def _restarts(cluster: Cluster, namespace: str) -> int:
    pods = cluster.get("pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")
    return sum(s.get("restartCount", 0) for pod in pods["items"]
               for s in pod.get("status", {}).get("containerStatuses", []))


@pytest.fixture(scope="module")
def outcomes(cluster: Cluster, operator_release: str) -> dict[str, Any]:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=300)
    cluster.kubectl("create", "namespace", NAMESPACE)
    # The status path: the chart's CI values keep the webhook out of this namespace.
    cluster.kubectl("label", "namespace", NAMESPACE, f"{WEBHOOK_OFF_LABEL}=off")
    restarts_before = _restarts(cluster, operator_release)
    refusals: dict[str, str] = {}
    for case in CASES:
        created = cluster.kubectl("create", "-f", "-", stdin=_manifest(case.id, case.spec),
                                  check=False)
        if not created.ok:
            refusals[case.id] = created.stderr
    stored = [case.id for case in CASES if case.id not in refusals]

    def all_failed() -> dict[str, Any] | None:
        jobs = {j["metadata"]["name"]: j for j in cluster.get(
            "ftj", "-n", NAMESPACE)["items"]}
        done = all(jobs.get(NAMES[i], {}).get("status", {}).get("phase") == "Failed"
                   for i in stored)
        return jobs if done else None

    jobs = wait_until("the operator to fail every stored hostile job", all_failed, 180,
                      on_timeout=lambda: cluster.diagnostics(NAMESPACE))
    children = {plural: cluster.get(plural, "-n", NAMESPACE)["items"]
                for plural in ("configmaps", "services", "jobs")}
    log = cluster.kubectl("-n", operator_release, "logs", f"deployment/{RELEASE}",
                          "--tail=-1").stdout
    return {"refusals": refusals, "stored": stored, "jobs": jobs, "children": children,
            "log": log, "restarts": _restarts(cluster, operator_release) - restarts_before}


def test_both_the_server_and_the_operator_have_cases_to_refuse(outcomes) -> None:
    assert outcomes["refusals"] and outcomes["stored"]


def test_server_refusals_name_the_field(outcomes) -> None:
    wrong = {}
    for case in CASES:
        said = outcomes["refusals"].get(case.id)
        if said is None:
            continue
        # The server names a map entry as spec.a[key]; the cases as spec.a.
        plain = re.sub(r"\[[^\]]*\]", "", said)
        # (The server quotes what it refuses, a pasted token too: to the user who sent it,
        # and in no object, status or log.)
        if re.sub(r"\[[^\]]*\]", "", case.field) not in plain:
            wrong[case.id] = (case.field, said[-300:])
    assert not wrong, json.dumps(wrong, indent=1)


def test_every_stored_case_is_failed_by_the_operator_naming_its_field(outcomes) -> None:
    fields = {case.id: case.field for case in CASES}
    wrong = {}
    for case_id in outcomes["stored"]:
        status = outcomes["jobs"][NAMES[case_id]]["status"]
        messages = [c["message"] for c in status["conditions"] if c["status"] == "False"]
        if not any(fields[case_id] in m for m in messages):
            wrong[case_id] = (fields[case_id], messages)
    assert not wrong, json.dumps(wrong, indent=1)[:4000]


def test_nothing_is_left_behind_and_the_operator_held(outcomes) -> None:
    owned = {obj["metadata"]["name"]: plural for plural, items in outcomes["children"].items()
             for obj in items if obj["metadata"].get("ownerReferences")}
    assert owned == {}
    assert outcomes["restarts"] == 0
    assert "Traceback" not in outcomes["log"]
    assert TOKEN not in outcomes["log"]
    # (A stored job's spec holds what its user wrote; its status must not repeat it.)
    assert TOKEN not in json.dumps({n: j.get("status") for n, j in outcomes["jobs"].items()})
