"""The Kubernetes permissions the operator uses: the single list the Helm chart's ClusterRole
must grant (a chart test compares the two).

Each rule names what in the code needs it. kopf runs standalone (no peering objects) and with
resource and namespace scanning disabled, so it needs no access to CRDs or namespaces.
"""

from __future__ import annotations

from typing import NamedTuple


class Rule(NamedTuple):
    """One RBAC rule: API group ("" for core), resource (with /subresource) and verbs."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]


RULES: tuple[Rule, ...] = (
    # kopf lists and watches FineTuneJobs; a reconcile gets one by name when its kept body
    # is stale. patch only lets kopf remove the finalizer older versions added.
    Rule("finetune.dev", "finetunejobs", ("get", "list", "watch", "patch")),
    # The lifecycle writes status through the status subresource.
    Rule("finetune.dev", "finetunejobs/status", ("get", "patch")),
    # Children found by deterministic name: read, create, delete (TTL, restarts, deletion).
    Rule("", "configmaps", ("get", "create", "delete")),
    Rule("", "services", ("get", "create", "delete")),
    # The gang: kopf watches Jobs to react at once; suspend/resume is a patch.
    Rule("batch", "jobs", ("get", "list", "watch", "create", "patch", "delete")),
    # Pods of the current Job: phases, exit codes, scheduler messages, rank 0's IP. The
    # sizing pod of a model the catalog lacks: created, read by name, deleted once read.
    Rule("", "pods", ("get", "list", "create", "delete")),
    # Events on every transition (kopf posts core/v1 Events).
    Rule("", "events", ("create",)),
)


# The admission webhook's own (controller/webhook_tls.py), in the chart's -webhook Role and
# ClusterRole: its certificate Secret in the operator's namespace (create, then read and
# renew only that one), and the CA put into its one ValidatingWebhookConfiguration.
WEBHOOK_SECRET_RULES: tuple[Rule, ...] = (Rule("", "secrets", ("create",)),)
WEBHOOK_NAMED_SECRET_VERBS = ("get", "update")
WEBHOOK_CONFIGURATION_VERBS = ("get", "patch")


# The memory calibration table's (controller/calibration.py), in the chart's -calibration
# Role of the operator's namespace: its one ConfigMap, created once, then read and replaced
# (read-modify-write, with its resourceVersion), never another ConfigMap of that namespace.
CALIBRATION_CONFIG_MAP_RULES: tuple[Rule, ...] = (Rule("", "configmaps", ("create",)),)
CALIBRATION_NAMED_CONFIG_MAP_VERBS = ("get", "update")


def calibration_rules(config_map: str) -> list[dict[str, list[str]]]:
    """The -calibration Role's rules, for the ConfigMap named `config_map`."""
    return [*_policy(CALIBRATION_CONFIG_MAP_RULES),
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [config_map],
             "verbs": list(CALIBRATION_NAMED_CONFIG_MAP_VERBS)}]


def webhook_secret_rules(secret: str) -> list[dict[str, list[str]]]:
    """The -webhook Role's rules, for the Secret named `secret`."""
    return [*_policy(WEBHOOK_SECRET_RULES),
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret],
             "verbs": list(WEBHOOK_NAMED_SECRET_VERBS)}]


def webhook_configuration_rules(configuration: str) -> list[dict[str, list[str]]]:
    """The -webhook ClusterRole's rules, for the ValidatingWebhookConfiguration named so."""
    return [{"apiGroups": ["admissionregistration.k8s.io"],
             "resources": ["validatingwebhookconfigurations"],
             "resourceNames": [configuration], "verbs": list(WEBHOOK_CONFIGURATION_VERBS)}]


def _policy(rules: tuple[Rule, ...]) -> list[dict[str, list[str]]]:
    return [{"apiGroups": [r.api_group], "resources": [r.resource], "verbs": list(r.verbs)}
            for r in rules]


def as_policy_rules() -> list[dict[str, list[str]]]:
    """RULES as Kubernetes PolicyRule dicts (one per rule)."""
    return _policy(RULES)
