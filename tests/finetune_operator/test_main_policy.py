"""The tenant policy through one running operator process (FINETUNE_POLICY, as the chart
sets it): each job that breaks it ends Failed with Valid=False/PolicyViolation naming the
field and the chart value, exactly one Warning Event and no child; the allowed job is
planned and its Job's pods carry the forced toleration and node selector."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ftj_samples import spec_dict
from tests.support.kube_faults import finetunejobs, operator_against_emulator, phases, stored
from tests.support.wiring import Kube, wait_for

NS = "tenant-a"
FORCED_TOLERATION = {"key": "pool", "operator": "Equal", "value": "tenants",
                     "effect": "NoSchedule"}
POLICY = {
    "allowedImagePrefixes": ["registry.corp/ml/"],
    "allowedTolerations": [{"key": "spot"}],
    "forcedTolerations": [FORCED_TOLERATION],
    "forcedNodeSelector": {"pool": "tenants"},
    "allowedPriorityClasses": ["tenant"],
    "namespaceLimits": {"*": {"maxNodes": 1}},
}
CPU = {"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 2, "strategy": "ddp"}
# name -> (spec, the fragment its message must hold); None: allowed
JOBS: dict[str, tuple[dict[str, Any], str | None]] = {
    "allowed": (spec_dict(image="registry.corp/ml/trainer:1",
                          resources={**CPU, "tolerations": [{"key": "spot",
                                                             "operator": "Exists"}]}), None),
    "evil-image": (spec_dict(image="registry.corp/ml-evil/x:1", resources=CPU),
                   ("spec.image: 'registry.corp/ml-evil/x:1' is not allowed by the operator's "
                   "policy (policy.allowedImagePrefixes: registry.corp/ml/)")),
    "any-taint": (spec_dict(resources={**CPU, "tolerations": [{"operator": "Exists"}]}),
                  "spec.resources.tolerations[0]: a toleration without a key"),
    "other-pool": (spec_dict(resources={**CPU, "nodeSelector": {"pool": "gpu"}}),
                   "policy.forcedNodeSelector: pool=tenants"),
    "critical": (spec_dict(resources={**CPU, "priorityClassName": "system-node-critical"}),
                 "policy.allowedPriorityClasses: tenant"),
    "two-nodes": (spec_dict(resources={**CPU, "nodes": 2}),
                  ('spec.resources.nodes: 2 nodes, more than a job of namespace \'tenant-a\' '
                  'may use (policy.namespaceLimits."*".maxNodes: 1)')),
}
REFUSED = [name for name, (_, fragment) in JOBS.items() if fragment]
ENV = {"FINETUNE_POLICY": json.dumps(POLICY), "FINETUNE_RESYNC_INTERVAL": "1"}
WAIT = 30.0


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("kube")
    with operator_against_emulator(tmp, ENV) as (cluster, operator):
        kube = Kube()
        for name, (spec, _) in JOBS.items():
            kube.apply(NS, name, spec)
        expected = {name: "Failed" if fragment else "Pending"
                    for name, (_, fragment) in JOBS.items()}
        wait_for("every job to settle", lambda: phases(cluster, NS) == expected, timeout=WAIT,
                 detail=lambda: phases(cluster, NS))
        wait_for("a Warning Event for every refused job", lambda: {
            e["involvedObject"]["name"] for e in stored(cluster, "events", NS)
            if e.get("type") == "Warning" and e.get("reason") == "PolicyViolation"}
            >= set(REFUSED), timeout=WAIT)
        job = wait_for("the allowed job's Job", lambda: kube.job(NS, "allowed-r0"),
                       timeout=WAIT)
        yield {"jobs": finetunejobs(cluster, NS), "events": stored(cluster, "events", NS),
               "children": [o for plural in ("configmaps", "services", "jobs", "pods")
                            for o in stored(cluster, plural, NS)],
               "job": job, "log": operator.output()}


@pytest.mark.parametrize("name", REFUSED)
def test_a_job_that_breaks_the_policy_fails_with_the_rule_and_one_event(outcome, name):
    status = outcome["jobs"][name]["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    fragment = JOBS[name][1]
    assert status["phase"] == "Failed"
    assert (conditions["Valid"]["status"], conditions["Valid"]["reason"]) == (
        "False", "PolicyViolation")
    assert conditions["Failed"]["reason"] == "PolicyViolation"
    assert fragment in conditions["Valid"]["message"]
    assert "ask your platform team" in conditions["Valid"]["message"]
    assert status.get("plan") is None
    warnings = [e for e in outcome["events"] if e["involvedObject"]["name"] == name
                and e.get("type") == "Warning"]
    assert len(warnings) == 1 and warnings[0]["reason"] == "PolicyViolation"
    assert fragment in warnings[0]["message"]


def test_only_the_allowed_job_has_children(outcome):
    allowed_uid = outcome["jobs"]["allowed"]["metadata"]["uid"]
    owners = {o["metadata"]["ownerReferences"][0]["uid"] for o in outcome["children"]}
    assert owners == {allowed_uid}


def test_the_allowed_jobs_pods_carry_the_forced_toleration_and_node_selector(outcome):
    pod = outcome["job"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.corp/ml/trainer:1"
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists"}, FORCED_TOLERATION]
    assert pod["nodeSelector"] == {"pool": "tenants"}


def test_the_refusals_leave_no_traceback_in_the_operator_log(outcome):
    assert "Traceback" not in outcome["log"]
