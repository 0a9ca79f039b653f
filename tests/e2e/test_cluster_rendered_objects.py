"""Our copy of the API server's rules (finetune_operator/apirules.py) held against the real one.

For a sample of the generated specs of tests/support/apiserver_cases.py that `finetune
validate` accepts, the objects `finetune render` prints (render_cmd.render_job, in process)
are created with `kubectl create --dry-run=server`: the API server must take every one (the
operator creates its children with POST, so `create`, not `apply`, whose last-applied
annotation would add a limit the operator never meets). For a sample of the specs our rules
refuse, the objects are rendered anyway, bypassing validation, and the API server must
refuse the Job carrying the bad field too; likewise a ConfigMap over 1 MiB. Refusals our rules
make that the server would not (an output.path inside or above a fixed mount: the server only
wants mount paths unique; the pod breaks later) are not sent.

Two kubectl calls for the accepted, one for the refused Jobs and one for the ConfigMap:
about a minute in all, most of it rendering. Nothing is stored (dry run) but the namespace,
deleted at the end.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from finetune_contract.api import FineTuneJobSpec
from finetune_operator import render
from finetune_operator.cli.render_cmd import PLACEHOLDER_UID, render_job
from finetune_operator.planner import plan_job
from finetune_operator.settings import Settings
from pydantic import ValidationError

from tests.e2e.cluster import Cluster
from tests.support.apiserver_cases import SpecCase, spec_cases
from tests.support.ftj_samples import TINY_MODEL

pytestmark = [pytest.mark.cluster]

NAMESPACE = "ftj-rendered"
CASES = spec_cases()
# Every accepted non-toleration case, every sixth accepted toleration combination.
ACCEPTED = [c for c in CASES if c.field is None and not c.id.startswith("toleration")]
ACCEPTED += [c for c in CASES if c.field is None and c.id.startswith("toleration")][::6]
# Bad output paths the server refuses as well: the same path as a mount every pod has.
SAME_AS_A_MOUNT = {render.CONFIG_DIR, render.SHM_DIR, render.SCRATCH_DIR}


def _server_refuses_too(case: SpecCase) -> bool:
    if case.field is None:
        return False
    if case.field == "spec.output.path":
        path = case.edit["output"]["path"]
        return path.rstrip("/") in SAME_AS_A_MOUNT
    return True


REFUSED = [c for c in CASES if _server_refuses_too(c)]
REFUSED = [c for c in REFUSED if not c.id.startswith("toleration")] + [
    c for c in REFUSED if c.id.startswith("toleration")][::8]


def job_name(i: int) -> str:
    return f"r{i}"


def as_list(objects: list[dict[str, Any]]) -> str:
    """One kubectl input, as JSON: no YAML reading of values like 'a\\n' or 'no'."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def dry_run_create(cluster: Cluster, objects: list[dict[str, Any]]):
    return cluster.kubectl("create", "--dry-run=server", "-n", NAMESPACE, "-o", "name",
                           "-f", "-", stdin=as_list(objects), check=False, timeout=120)


def in_namespace(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objects:
        obj["metadata"]["namespace"] = NAMESPACE
    return objects


def rendered_anyway(case: SpecCase, name: str) -> list[dict[str, Any]] | None:
    """The children of a spec our rules refuse, rendered without them; None when the
    schema refuses it already (nothing can be rendered)."""
    doc = case.document(name)
    try:
        spec = FineTuneJobSpec.model_validate(doc["spec"], by_alias=True, by_name=False)
    except ValidationError:
        return None
    owner = render.Owner(name, NAMESPACE, PLACEHOLDER_UID)
    return render.children(owner, spec, plan_job(spec), Settings(), 0)


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    cluster.apply_text(json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": NAMESPACE}}))
    yield NAMESPACE
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_the_api_server_accepts_every_object_rendered_from_an_accepted_spec(cluster,
                                                                           namespace):
    objects = []
    for i, case in enumerate(ACCEPTED):
        doc = case.document(job_name(i))
        objects += in_namespace(render_job(doc, NAMESPACE, PLACEHOLDER_UID))
    half = len(objects) // 2
    for part in (objects[:half], objects[half:]):
        created = dry_run_create(cluster, part)
        assert created.ok, f"the API server refused rendered objects of accepted specs:\n" \
                           f"{created.stderr[-4000:]}"
        assert len(created.stdout.split()) == len(part)


def test_the_api_server_refuses_the_job_of_each_sampled_spec_our_rules_refuse(cluster,
                                                                            namespace):
    jobs, cases = [], {}
    for i, case in enumerate(REFUSED):
        children = rendered_anyway(case, f"b{i}")
        if children is None:
            continue
        job = in_namespace(children)[2]
        jobs.append(job)
        cases[job["metadata"]["name"]] = case
    assert len(jobs) >= 30  # a sample of every rule, not of none
    refused = dry_run_create(cluster, jobs)
    # One line per refused object: ... Job.batch "b3-r0" is invalid: <field>: ...
    refused_names = set(re.findall(r'Job\.batch "([^"]+)" is invalid', refused.stderr))
    accepted = sorted(n for n in cases if n not in refused_names)
    assert not accepted, "the API server took Jobs our rules refuse: " + ", ".join(
        f"{n} ({cases[n].id}: {cases[n].edit})" for n in accepted)


def test_the_api_server_refuses_a_configmap_over_1_mib_as_our_check_does(cluster, namespace):
    model = copy.deepcopy(TINY_MODEL)
    model["config"]["note"] = "x" * (1024 * 1024)
    case = SpecCase("huge", {"model": model}, None)
    config_map = in_namespace(rendered_anyway(case, "huge") or [])[0]
    refused = dry_run_create(cluster, [config_map])
    assert not refused.ok
    assert "huge-trainer" in refused.stderr, refused.stderr[-2000:]
