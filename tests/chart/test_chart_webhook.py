"""The chart's admission webhook: its configuration, Service, certificate handling and the
settings it gives the operator, for each webhook value."""

from __future__ import annotations

from typing import Any

import pytest
from finetune_operator import names, permissions, settings

from tests.chart.helpers import HelmError, by_kind, helm_template, one
from tests.conftest import require_tool

FULLNAME = "ft-finetune-operator"


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm")


def _env(objects: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _webhook(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (hook,) = one(objects, "ValidatingWebhookConfiguration")["webhooks"]
    return hook


def test_by_default_the_api_server_calls_the_operator_through_its_service(helm):
    objects = helm_template(helm)
    hook = _webhook(objects)
    assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 10
    assert hook["sideEffects"] == "None" and "namespaceSelector" not in hook
    assert hook["rules"] == [{"apiGroups": ["finetune.dev"], "apiVersions": ["v1alpha1"],
                              "resources": ["finetunejobs"],
                              "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}]
    # kopf serves each validating handler at /<its id>
    assert hook["clientConfig"]["service"] == {
        "name": f"{FULLNAME}-webhook", "namespace": "finetune-system",
        "path": f"/{names.WEBHOOK_ID}", "port": 443}
    (service,) = [s for s in by_kind(objects, "Service")
                  if s["metadata"]["name"] == f"{FULLNAME}-webhook"]
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443,
                                         "targetPort": "webhook", "protocol": "TCP"}]
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    webhook = settings.from_env(_env(objects)).webhook
    assert (webhook.port, webhook.service, webhook.namespace, webhook.secret,
            webhook.configuration, webhook.cert_dir) == (
        9443, f"{FULLNAME}-webhook.finetune-system.svc", "finetune-system",
        f"{FULLNAME}-webhook-tls", FULLNAME, "")


def test_the_self_signed_certificate_gets_rules_for_its_secret_and_configuration_only(helm):
    objects = helm_template(helm)
    (role,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-webhook")]
    assert role["rules"] == permissions.webhook_secret_rules(f"{FULLNAME}-webhook-tls")
    (cluster_role,) = [r for r in by_kind(objects, "ClusterRole")
                       if r["metadata"]["name"].endswith("-webhook")]
    assert cluster_role["rules"] == permissions.webhook_configuration_rules(FULLNAME)


def test_with_cert_manager_its_certificate_is_mounted_and_its_ca_injected(helm):
    objects = helm_template(helm, "--set", "webhook.certManager.enabled=true")
    config = one(objects, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"finetune-system/{FULLNAME}-webhook"}
    certificate = one(objects, "Certificate")
    assert certificate["spec"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert f"{FULLNAME}-webhook.finetune-system.svc" in certificate["spec"]["dnsNames"]
    assert one(objects, "Issuer")["spec"] == {"selfSigned": {}}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "webhook-tls", "secret": {"secretName": f"{FULLNAME}-webhook-tls"}} in \
        pod["volumes"]
    assert settings.from_env(_env(objects)).webhook.cert_dir == "/etc/finetune-webhook-tls"
    assert not [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-webhook")]


def test_off_there_is_no_webhook_and_the_operator_serves_none(helm):
    objects = helm_template(helm, "--set", "webhook.enabled=false")
    assert not by_kind(objects, "ValidatingWebhookConfiguration")
    assert settings.from_env(_env(objects)).webhook is None
    assert [s["metadata"]["name"] for s in by_kind(objects, "Service")] == [f"{FULLNAME}-metrics"]


def test_the_values_set_the_policy_the_timeout_and_the_namespaces(helm):
    objects = helm_template(helm, "--set", "webhook.failurePolicy=Ignore",
                            "--set", "webhook.timeoutSeconds=5",
                            "--set", "operator.watchNamespaces={team-a,team-b}")
    hook = _webhook(objects)
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Ignore", 5)
    assert hook["namespaceSelector"] == {"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}


@pytest.mark.parametrize("bad,complaint", [
    ("webhook.failurePolicy=Sometimes", "failurePolicy"),
    ("webhook.timeoutSeconds=31", "timeoutSeconds"),
    ("webhook.port=8081", "port"),
])
def test_the_values_schema_refuses_what_the_api_server_would(helm, bad, complaint):
    with pytest.raises(HelmError, match=complaint):
        helm_template(helm, "--set", bad)
