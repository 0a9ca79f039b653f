"""The fit check at admission on the real cluster (issue 22): the API server calls the
operator's validating webhook, through its Service and the operator's own CA.

A job that does not fit within its bounds, and every case of tests/cases/invalid, is refused
at `kubectl apply` with the field and the reason; a valid job is admitted; an edit that breaks
a stored job's spec is refused while a label is not; and the certificate, kept in its Secret,
outlives a restart of the operator.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.cluster import RELEASE, Cluster, wait_until
from tests.e2e.conftest import WEBHOOK_DENIED as DENIED
from tests.e2e.conftest import wait_for_webhook
from tests.e2e.test_cluster_admission import CLIENT_SIDE, INVALID, _field_path, _named, expected

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "ftj-webhook"
TINY = ROOT / "examples" / "tiny-chat-k8s.yaml"


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, operator_release: str) -> str:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=300)
    cluster.restricted_namespace(NAMESPACE)
    yield NAMESPACE
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _job(name: str, **resources: Any) -> dict[str, Any]:
    job = yaml.safe_load(TINY.read_text())
    job["metadata"] = {"name": name, "namespace": NAMESPACE}
    job["spec"]["output"] = {}
    job["spec"]["resources"].update(resources)
    return job


def test_a_job_that_does_not_fit_is_refused_at_apply_with_the_planners_reason(
        cluster: Cluster, namespace: str) -> None:
    job = _job("too-big", gpu="A10G-24GB", gpusPerNode=1, nodes=None, maxNodes=1, cpu=None,
               memory=None)
    job["spec"]["model"] = {"name": "meta-llama/Llama-3.1-8B-Instruct"}
    job["spec"]["resources"] = {k: v for k, v in job["spec"]["resources"].items()
                                if v is not None}
    applied = cluster.apply_text(json.dumps(job), check=False)
    assert not applied.ok
    assert DENIED in applied.stderr, applied.stderr
    assert "spec.resources: does not fit: nothing fits within 1 x 1 A10G-24GB" in applied.stderr
    assert "tuning: qlora would fit (ddp on 1 x 1 A10G-24GB" in applied.stderr
    assert cluster.kubectl("get", "ftj", "too-big", "-n", namespace, check=False).returncode


def test_every_invalid_case_is_refused_at_apply_naming_its_field(
        cluster: Cluster, namespace: str) -> None:
    stored, unnamed, denied = [], {}, []
    for path in INVALID:
        if path.stem in CLIENT_SIDE:
            continue
        _, manifest = _named(path)
        applied = cluster.apply_text(manifest, "-n", namespace, check=False)
        if applied.ok:
            stored.append(path.stem)
            continue
        if DENIED in applied.stderr:
            denied.append(path.stem)
        field = re.sub(r"\[\d+\]", "", _field_path(expected(path)))
        said = re.sub(r"\[\d+\]", "", applied.stderr)
        if field not in said and not field.startswith(("apiVersion", "kind")):
            unnamed[path.stem] = (field, applied.stderr[-300:])
    assert not stored, f"stored although invalid: {stored}"
    assert not unnamed, json.dumps(unnamed, indent=1)
    # Those the CRD cannot express reached the webhook (e.g. a CPU request in words).
    assert "cpu-in-words" in denied, denied


def test_the_webhook_refuses_what_the_crd_cannot_express(cluster: Cluster,
                                                          namespace: str) -> None:
    job = _job("bad-memory", memory="96 gigs")  # any string of 32 characters, to the CRD
    applied = cluster.apply_text(json.dumps(job), check=False)
    assert DENIED in applied.stderr, applied.stderr
    assert "spec.resources.memory: is not a Kubernetes quantity (got '96 gigs')" in \
        applied.stderr


def test_a_valid_job_is_admitted_and_a_breaking_edit_is_refused(cluster: Cluster,
                                                                namespace: str) -> None:
    job = _job("edited")
    job["spec"]["runPolicy"]["suspend"] = True  # stored, planned; no pod needed here
    cluster.apply_text(json.dumps(job))
    patched = cluster.kubectl("patch", "ftj", "edited", "-n", namespace, "--type", "merge",
                              "-p", '{"spec": {"resources": {"cpu": "a lot"}}}', check=False)
    assert DENIED in patched.stderr, patched.stderr
    assert "spec.resources.cpu" in patched.stderr
    # Not a spec edit: never checked.
    cluster.kubectl("label", "ftj", "edited", "-n", namespace, "team=a")
    stored = cluster.get("ftj", "edited", "-n", namespace)
    assert stored["spec"]["resources"]["cpu"] == job["spec"]["resources"]["cpu"]
    assert stored["metadata"]["labels"] == {"team": "a"}


def _tls(cluster: Cluster, operator_release: str) -> tuple[str, str]:
    secret = cluster.get("secret", f"{RELEASE}-webhook-tls", "-n", operator_release)
    config = cluster.get("validatingwebhookconfiguration", RELEASE)
    (hook,) = config["webhooks"]
    return (base64.b64decode(secret["data"]["tls.crt"]).decode(),
            base64.b64decode(hook["clientConfig"]["caBundle"]).decode())


def test_the_certificate_and_ca_bundle_outlive_an_operator_restart(
        cluster: Cluster, operator_release: str, namespace: str) -> None:
    before = _tls(cluster, operator_release)
    secret = cluster.get("secret", f"{RELEASE}-webhook-tls", "-n", operator_release)
    assert base64.b64decode(secret["data"]["ca.crt"]).decode() == before[1]
    deployment = f"deployment/{RELEASE}"
    cluster.kubectl("-n", operator_release, "rollout", "restart", deployment)
    cluster.kubectl("-n", operator_release, "rollout", "status", deployment, "--timeout=180s")
    assert _tls(cluster, operator_release) == before
    wait_for_webhook(cluster)
    # The new pod serves the kept certificate: the API server still gets its answer.
    job = _job("after-restart", cpu="a lot")

    def refused() -> str | None:
        applied = cluster.apply_text(json.dumps(job), check=False)
        return applied.stderr if DENIED in applied.stderr else None

    said = wait_until("the restarted webhook to answer", refused, 60)
    assert "spec.resources.cpu" in said


def test_the_webhook_namespace_selector_follows_the_values(cluster: Cluster) -> None:
    config = cluster.get("validatingwebhookconfiguration", RELEASE)
    (hook,) = config["webhooks"]
    values = yaml.safe_load((Path(ROOT) / "charts" / "finetune-operator" / "ci" /
                             "kind-values.yaml").read_text())
    assert hook["namespaceSelector"] == values["webhook"]["namespaceSelector"]
    assert hook["failurePolicy"] == "Fail"
