"""What the real API server does with FineTuneJobs: the CRD's schema, CEL rules and defaults.

Every case of tests/cases/invalid is applied with kubectl, in a namespace the admission
webhook leaves alone (the status path, as with the webhook off; test_cluster_webhook.py
checks the webhook). A case the CRD can express is refused by the API server itself, naming
the field path; every other case is stored and then refused by the operator with a Failed
phase, an InvalidSpec (or DoesNotFit) condition and a Warning Event. The defaults the server
fills in are the ones `finetune validate` assumes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_contract.api import FineTuneJobSpec

from tests.conftest import ROOT
from tests.e2e.cluster import WEBHOOK_OFF_LABEL, Cluster, condition, wait_until
from tests.finetune_operator.test_crd_cel import CAUGHT_BY_CEL

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

INVALID = sorted((ROOT / "tests" / "cases" / "invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NAMESPACE = "ftj-invalid"
DEFAULTS_NAMESPACE = "ftj-defaults"
# Cases kubectl itself refuses before any request: there is no object to send.
CLIENT_SIDE = {"missing-name", "spec-is-a-list"}


def expected(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect: "):
            return line.removeprefix("# expect: ")
    raise AssertionError(f"{path} has no '# expect:' line")


def _named(path: Path) -> tuple[str, str]:
    """The case's manifest under a name of its own (cases share the name `tiny`)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict) \
            and doc["metadata"].get("name") == "tiny":
        doc["metadata"]["name"] = path.stem[:60].strip("-")
        return doc["metadata"]["name"], json.dumps(doc)
    name = doc.get("metadata", {}).get("name") if isinstance(doc, dict) else None
    return str(name), path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def outcomes(cluster: Cluster, operator_release: str) -> dict[str, dict[str, Any]]:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=300)
    cluster.kubectl("create", "namespace", NAMESPACE)
    # The status path: the chart's CI values keep the webhook out of this namespace.
    cluster.kubectl("label", "namespace", NAMESPACE, f"{WEBHOOK_OFF_LABEL}=off")
    results: dict[str, dict[str, Any]] = {}
    for path in INVALID:
        name, manifest = _named(path)
        applied = cluster.apply_text(manifest, "-n", NAMESPACE, check=False)
        results[path.stem] = {"name": name, "accepted": applied.ok,
                              "stderr": applied.stderr, "expect": expected(path)}
    for case in (r for r in results.values() if r["accepted"]):
        case["job"] = wait_until(
            f"the operator to fail FineTuneJob {case['name']}",
            lambda case=case: _failed(cluster, case["name"]), 120,
            on_timeout=lambda: cluster.diagnostics(NAMESPACE))
        case["events"] = cluster.events(NAMESPACE, case["name"])
    return results


def _failed(cluster: Cluster, name: str) -> dict[str, Any] | None:
    job = cluster.get("ftj", name, "-n", NAMESPACE)
    return job if job.get("status", {}).get("phase") == "Failed" else None


def _field_path(expect: str) -> str:
    return expect.split(":", 1)[0].strip()


def test_every_case_is_refused_by_the_server_or_failed_by_the_operator(outcomes) -> None:
    assert len(outcomes) == len(INVALID)
    refused = [c for c in outcomes.values() if not c["accepted"]]
    failed = [c for c in outcomes.values() if c["accepted"]]
    assert refused and failed
    for case in failed:
        assert case["job"]["status"]["phase"] == "Failed"


def test_server_refusals_name_the_field_path(outcomes) -> None:
    wrong = {}
    for stem, case in outcomes.items():
        if case["accepted"] or stem in CLIENT_SIDE:
            continue
        path = _field_path(case["expect"])
        # The server writes paths as spec.a.b or spec.a[0].b; the corpus as spec.a.b.
        said = re.sub(r"\[\d+\]", "", case["stderr"])
        if path not in said and not path.startswith(("apiVersion", "kind")):
            wrong[stem] = (path, case["stderr"][-400:])
    assert not wrong, json.dumps(wrong, indent=1)


def test_cases_the_crd_rules_express_are_refused_by_the_server_itself(outcomes) -> None:
    stored = [stem for stem in CAUGHT_BY_CEL if outcomes[stem]["accepted"]]
    assert not stored, f"the API server stored what a CEL rule should refuse: {stored}"


def test_operator_refusals_have_a_condition_and_a_warning_event(outcomes) -> None:
    missing = {}
    for stem, case in outcomes.items():
        if not case["accepted"]:
            continue
        job = case["job"]
        failed = condition(job, "Failed")
        warnings = [e for e in case["events"] if e["type"] == "Warning"]
        if not failed or failed["reason"] not in ("InvalidSpec", "DoesNotFit") or not warnings:
            missing[stem] = {"condition": failed, "events": [e["reason"] for e in warnings]}
        elif case["expect"].split(":", 1)[-1].strip() not in failed["message"]:
            missing[stem] = {"expect": case["expect"], "message": failed["message"]}
    assert not missing, json.dumps(missing, indent=1)


def _server_defaulted(cluster: Cluster, manifest: dict[str, Any]) -> dict[str, Any]:
    out = cluster.apply_text(json.dumps(manifest), "-n", DEFAULTS_NAMESPACE,
                             "--dry-run=server", "-o", "json")
    return json.loads(out.stdout)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_server_defaults_are_the_ones_finetune_validate_assumes(cluster: Cluster,
                                                                example: Path) -> None:
    cluster.kubectl("create", "namespace", DEFAULTS_NAMESPACE, check=False)
    manifest = yaml.safe_load(example.read_text(encoding="utf-8"))
    stored = _server_defaulted(cluster, manifest)
    # Filled in by the server, or by pydantic when the CLI reads the file: the same job.
    assert FineTuneJobSpec.model_validate(stored["spec"]) == \
        FineTuneJobSpec.model_validate(manifest["spec"])


def test_a_job_without_a_gpu_type_gets_the_charts_default_gpu(cluster: Cluster,
                                                             operator_release: str) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "tiny-chat-k8s.yaml").read_text())
    manifest["metadata"]["name"] = "no-gpu-type"
    del manifest["spec"]["resources"]["gpu"]
    manifest["spec"]["runPolicy"]["suspend"] = True  # planned, never run
    del manifest["spec"]["output"]
    cluster.kubectl("create", "namespace", DEFAULTS_NAMESPACE, check=False)
    stored = _server_defaulted(cluster, manifest)
    assert "gpu" not in stored["spec"]["resources"]
    cluster.apply_text(json.dumps(manifest), "-n", DEFAULTS_NAMESPACE)
    try:
        plan = wait_until("a plan", lambda: cluster.get(
            "ftj", "no-gpu-type", "-n", DEFAULTS_NAMESPACE).get("status", {}).get("plan"), 60)
        assert plan["gpu"] == "cpu"  # charts/finetune-operator/ci/kind-values.yaml
    finally:
        cluster.kubectl("delete", "ftj", "no-gpu-type", "-n", DEFAULTS_NAMESPACE,
                        check=False)
