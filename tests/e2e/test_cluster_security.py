"""Least privilege on the real cluster (issue 20): what the API server lets the operator's
ServiceAccount do is exactly finetune_operator/permissions.py, which is docs/install.md's
permission table (tests/chart/test_chart.py), beyond what every authenticated account may do; it cannot
read Secrets anywhere."""

from __future__ import annotations

import re

import pytest
from finetune_operator import permissions

from tests.e2e.cluster import RELEASE, Cluster

pytestmark = [pytest.mark.cluster]

NAMESPACE = "ftj-security"
OPERATOR = f"system:serviceaccount:{{namespace}}:{RELEASE}"
# `kubectl auth can-i --list`: resource[.group], non-resource URLs, names, verbs.
_ROW = re.compile(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")

Grant = tuple[str, str, frozenset[str]]  # (api group, resource, verbs)


def _can_i_list(cluster: Cluster, user: str) -> set[Grant]:
    """What `user` may do in NAMESPACE on resources (non-resource URLs aside), as the API
    server answers it."""
    out = cluster.kubectl("auth", "can-i", "--list", "-n", NAMESPACE, "--as", user).stdout
    grants = set()
    for line in out.splitlines()[1:]:
        match = _ROW.match(line)
        if not match or match[2]:
            continue  # a non-resource URL
        resource, _, group = match[1].partition(".")
        grants.add((group, resource, frozenset(match[4].split())))
    return grants


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, operator_release: str) -> str:
    cluster.restricted_namespace(NAMESPACE)
    # An account nobody granted anything: what every authenticated account may do.
    cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", "nobody", check=False)
    return operator_release


def test_the_operator_may_do_what_the_install_guide_lists_and_nothing_more(
        cluster: Cluster, namespace: str) -> None:
    baseline = _can_i_list(cluster, f"system:serviceaccount:{NAMESPACE}:nobody")
    granted = _can_i_list(cluster, OPERATOR.format(namespace=namespace)) - baseline
    # permissions.RULES is docs/install.md's table (tests/chart/test_chart.py holds them equal),
    # and the webhook's ClusterRole: its one ValidatingWebhookConfiguration, by name.
    webhook = ("admissionregistration.k8s.io", "validatingwebhookconfigurations",
               frozenset(permissions.WEBHOOK_CONFIGURATION_VERBS))
    assert _merge_subresources(granted) == {(r.api_group, r.resource, frozenset(r.verbs))
                                            for r in permissions.RULES} | {webhook}


def _can_i(cluster: Cluster, namespace: str, *what: str) -> str:
    return cluster.kubectl("auth", "can-i", *what, "--as", OPERATOR.format(namespace=namespace),
                           check=False).stdout.strip()


def test_the_webhook_rules_reach_its_own_secret_and_configuration_only(
        cluster: Cluster, namespace: str) -> None:
    own = f"{RELEASE}-webhook-tls"
    for verb in permissions.WEBHOOK_NAMED_SECRET_VERBS:
        assert _can_i(cluster, namespace, verb, f"secret/{own}", "-n", namespace) == "yes"
    assert _can_i(cluster, namespace, "get", "secret/another", "-n", namespace) == "no"
    assert _can_i(cluster, namespace, "patch", f"validatingwebhookconfiguration/{RELEASE}") \
        == "yes"
    assert _can_i(cluster, namespace, "patch", "validatingwebhookconfiguration/another") \
        == "no"


def _merge_subresources(grants: set[Grant]) -> set[Grant]:
    """kubectl prints `finetunejobs.finetune.dev/status` for a subresource: group and
    subresource swapped back into permissions.py's `finetunejobs/status`."""
    out = set()
    for group, resource, verbs in grants:
        if "/" in group:
            group, sub = group.split("/", 1)
            resource = f"{resource}/{sub}"
        out.add((group, resource, verbs))
    return out


@pytest.mark.parametrize("verb", ["get", "list", "watch"])
def test_the_operator_cannot_read_secrets_in_any_namespace(cluster: Cluster, namespace: str,
                                                           verb: str) -> None:
    answer = cluster.kubectl("auth", "can-i", verb, "secrets", "--all-namespaces", "--as",
                             OPERATOR.format(namespace=namespace), check=False)
    assert answer.stdout.strip() == "no", answer.stdout + answer.stderr
