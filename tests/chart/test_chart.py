"""The Helm chart, rendered by the real helm and checked against real Kubernetes schemas."""

from __future__ import annotations

import re
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml
from finetune_operator import names, permissions, placement, settings
from finetune_operator.crd import crd_yaml

from tests.chart.helpers import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    HelmError,
    by_kind,
    dashboard,
    helm_template,
    metrics_service,
    one,
    pod_specs,
    values_args,
    values_of,
)
from tests.conftest import ROOT, require_tool

# Custom resources the chart may render: kubernetes-validate has no schema for them.
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor"}


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(scope="module")
def rendered(helm: str) -> dict[str, list[dict]]:
    """Every value set rendered once (CRDs included) for the whole module."""
    return {vs: helm_template(helm, *values_args(vs), include_crds=True) for vs in VALUE_SETS}


# --------------------------------------------------------------------------- lint, render


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict(helm: str, value_set: str) -> None:
    out = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *values_args(value_set)],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_at_least_four_value_sets_besides_defaults() -> None:
    others = [vs for vs in VALUE_SETS if vs != "defaults"]
    assert len(others) >= 4, others
    for needed in ("namespaced", "monitoring", "custom-images", "resources"):
        assert any(vs.startswith(needed) for vs in others), needed


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_validates_against_kubernetes_schemas(
    rendered: dict[str, list[dict]], value_set: str
) -> None:
    objects = rendered[value_set]
    checked = 0
    for obj in objects:
        if obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
            continue  # checked structurally below
        # strict: unknown fields are errors too (a misspelt key is silently dropped otherwise)
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        checked += 1
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceAccount", "Service", "CustomResourceDefinition"} <= kinds
    assert checked >= 6


def test_a_schema_violation_is_caught() -> None:
    """The validator used above rejects a wrong Deployment (so passing means something)."""
    bad = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"replicas": "one", "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


def test_every_namespaced_object_is_in_the_release_namespace(
    rendered: dict[str, list[dict]],
) -> None:
    for obj in rendered["defaults"]:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                           "ValidatingWebhookConfiguration"):
            assert "namespace" not in obj["metadata"], obj["kind"]
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_standard_labels_on_every_object(rendered: dict[str, list[dict]], value_set: str) -> None:
    for obj in rendered[value_set]:
        if obj["kind"] == "CustomResourceDefinition":
            continue  # from crds/, identical to crds/finetunejob.yaml by design
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                    "helm.sh/chart"):
            assert key in labels, f"{obj['kind']} {obj['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


# --------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    "bad_values, complaint",
    [
        (["--set", "operator.logLevel=LOUD"], "logLevel"),
        (["--set", "image.digest=sha256:nothex"], "digest"),
        (["--set", "operator.watchNamespaces={Team_A}"], "watchNamespaces"),
        (["--set", "serviceMonitor.interval=30 seconds"], "interval"),
        (["--set", "metricsPort=8081"], "metricsPort"),
        (["--set", "podMonitor.ranksPerPod=0"], "ranksPerPod"),
        (["--set", "podMonitor.ranksPerPod=65"], "ranksPerPod"),  # more than gpusPerNode allows
        (["--set", "operator.progresInterval=5"], "progresInterval"),  # a typo
        (["--set", "trainer.gpuNodeLabels.key=not a key"], "key"),
        (["--set", "trainer.gpuNodeLabels.values.L4-24GB={has space}"], "L4-24GB"),
        (["--set", "trainer.gpuNodeLabels.enable=false"], "enable"),
    ],
)
def test_values_schema_rejects_bad_values(helm: str, bad_values: list[str], complaint: str) -> None:
    with pytest.raises(HelmError, match=complaint):
        helm_template(helm, *bad_values)


# --------------------------------------------------------------------------- RBAC


def _rbac_roles(objects: list[dict]) -> list[dict]:
    return by_kind(objects, "ClusterRole") + by_kind(objects, "Role")


def _is_webhooks(obj: dict) -> bool:
    return obj["metadata"]["name"].endswith("-webhook")


def _is_calibrations(obj: dict) -> bool:
    return obj["metadata"]["name"].endswith("-calibration")


def _job_roles(objects: list[dict], kind: str) -> list[dict]:
    """The (Cluster)Roles or bindings for the FineTuneJobs, not the webhook's or the
    calibration ConfigMap's own."""
    return [o for o in by_kind(objects, kind)
            if not _is_webhooks(o) and not _is_calibrations(o)]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rbac_rules_are_exactly_the_operators_permissions(
    rendered: dict[str, list[dict]], value_set: str
) -> None:
    roles = _rbac_roles(rendered[value_set])
    assert _job_roles(rendered[value_set], "ClusterRole") + _job_roles(
        rendered[value_set], "Role"), "no (Cluster)Role rendered"
    for role in roles:
        name = role["metadata"]["name"]
        if _is_calibrations(role):
            expected = permissions.calibration_rules(names.CALIBRATION_CONFIG_MAP)
        elif not _is_webhooks(role):
            expected = permissions.as_policy_rules()
        elif role["kind"] == "Role":
            expected = permissions.webhook_secret_rules(f"{name}-tls")
        else:
            expected = permissions.webhook_configuration_rules(name.removesuffix("-webhook"))
        assert role["rules"] == expected, (
            f"{role['kind']} {name} differs from finetune_operator.permissions: update "
            "templates/_helpers.tpl, templates/webhook.yaml or templates/calibration.yaml")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rbac_has_no_wildcards(rendered: dict[str, list[dict]], value_set: str) -> None:
    for role in _rbac_roles(rendered[value_set]):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule


def test_all_namespaces_gets_one_cluster_role_bound_to_the_service_account(
    rendered: dict[str, list[dict]],
) -> None:
    objects = rendered["defaults"]
    assert not _job_roles(objects, "Role") and not _job_roles(objects, "RoleBinding")
    (role,), (binding,) = _job_roles(objects, "ClusterRole"), _job_roles(objects,
                                                                          "ClusterRoleBinding")
    sa = one(objects, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_watch_namespaces_gets_a_role_per_namespace_and_nothing_cluster_wide(
    rendered: dict[str, list[dict]],
) -> None:
    objects = rendered["namespaced-values.yaml"]
    watched = values_of("namespaced-values.yaml")["operator"]["watchNamespaces"]
    assert not _job_roles(objects, "ClusterRole")
    assert not _job_roles(objects, "ClusterRoleBinding")
    # The webhook's ClusterRole reaches its one ValidatingWebhookConfiguration, by name.
    for role in by_kind(objects, "ClusterRole"):
        assert all(rule.get("resourceNames") for rule in role["rules"]), role
    roles = {r["metadata"]["namespace"]: r for r in _job_roles(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in _job_roles(objects, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == sorted(watched)
    sa = one(objects, "ServiceAccount")["metadata"]["name"]
    for ns in watched:
        assert bindings[ns]["roleRef"]["kind"] == "Role"
        assert bindings[ns]["roleRef"]["name"] == roles[ns]["metadata"]["name"]
        assert bindings[ns]["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    env = _env(one(objects, "Deployment"))
    assert settings.from_env(env).watch_namespaces == tuple(watched)


def test_rbac_off_renders_no_rbac(helm: str) -> None:
    objects = helm_template(helm, "--set", "rbac.create=false")
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


# --------------------------------------------------------------------------- pod security


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_container_is_restricted(rendered: dict[str, list[dict]], value_set: str) -> None:
    specs = pod_specs(rendered[value_set])
    assert specs
    for name, pod in specs:
        pod_ctx = pod.get("securityContext", {})
        for container in pod.get("initContainers", []) + pod["containers"]:
            ctx = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
            uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
            assert uid is None or uid > 0, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("privileged", False) is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            assert ctx.get("readOnlyRootFilesystem") is True, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, (name, volume)


# --------------------------------------------------------------------------- deployment


def _env(deployment: dict) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


class _RecordingEnv(dict):
    """A mapping that records which variables are read."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def test_chart_sets_exactly_the_variables_the_operator_reads(
    rendered: dict[str, list[dict]],
) -> None:
    env = _env(one(rendered["defaults"], "Deployment"))
    recorder = _RecordingEnv(env)
    settings.from_env(recorder)
    chart_vars = {name for name in env if name.startswith("FINETUNE_")}
    assert chart_vars, "the Deployment sets no FINETUNE_ variables"
    assert chart_vars <= recorder.read, f"set but never read: {chart_vars - recorder.read}"
    assert recorder.read <= chart_vars, f"read but not settable: {recorder.read - chart_vars}"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_operator_settings_follow_the_values(
    rendered: dict[str, list[dict]], value_set: str
) -> None:
    values = values_of(value_set)
    deployment = one(rendered[value_set], "Deployment")
    s = settings.from_env(_env(deployment))  # raises on a value the operator cannot use
    trainer = values["trainer"]["image"]
    tag = trainer.get("tag") or yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert s.default_image == f"{trainer['repository']}:{tag}"
    assert s.default_gpu == (values["trainer"]["defaultGpu"] or None)
    assert s.watch_namespaces == tuple(values["operator"]["watchNamespaces"])
    assert s.metrics_port == values["metricsPort"]
    assert s.progress_interval == values["operator"]["progressInterval"]
    assert s.resync_interval == values["operator"]["resyncInterval"]
    assert s.unschedulable_after == values["operator"]["unschedulableAfter"]
    assert s.stuck_pods_fail_after == values["operator"]["stuckPodsFailAfter"]
    assert s.log_level == values["operator"]["logLevel"]
    labels = values["trainer"]["gpuNodeLabels"]
    assert s.gpu_node_labels is not None and s.gpu_node_labels.key == labels["key"]
    for gpu, node_values in labels["values"].items():
        assert s.gpu_node_labels.of(gpu) == tuple(node_values)


def test_gpu_node_labels_default_to_gfd_and_switch_off(helm: str) -> None:
    s = settings.from_env(_env(one(helm_template(helm), "Deployment")))
    assert s.gpu_node_labels == placement.GpuNodeLabels()
    off = helm_template(helm, "--set", "trainer.gpuNodeLabels.enabled=false")
    assert settings.from_env(_env(one(off, "Deployment"))).gpu_node_labels is None


def test_a_gpu_type_the_catalog_lacks_stops_the_operator_with_the_chart_value_named(
    helm: str,
) -> None:
    # The schema checks the shape; the catalog's names are the operator's to check.
    objects = helm_template(helm, "--set", "trainer.gpuNodeLabels.values.H100={h100}")
    with pytest.raises(settings.SettingsError, match=r"trainer\.gpuNodeLabels.*H100-80GB"):
        settings.from_env(_env(one(objects, "Deployment")))


def test_custom_images_are_used(rendered: dict[str, list[dict]]) -> None:
    values = values_of("custom-images-values.yaml")
    deployment = one(rendered["custom-images-values.yaml"], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"{values['image']['repository']}@{values['image']['digest']}"
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert _env(deployment)["FINETUNE_DEFAULT_IMAGE"] == (
        "registry.example.com/ml/finetune-trainer:1.4.2-cuda12")


def test_resources_and_scheduling_are_used(rendered: dict[str, list[dict]]) -> None:
    values = values_of("resources-values.yaml")
    deployment = one(rendered["resources-values.yaml"], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == values["resources"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["priorityClassName"] == values["priorityClassName"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "ml-platform"
    assert pod["serviceAccountName"] == "finetune-operator"
    assert {"name": "TZ", "value": "UTC"} in pod["containers"][0]["env"]
    for obj in rendered["resources-values.yaml"]:
        if obj["kind"] != "CustomResourceDefinition":
            assert obj["metadata"]["labels"]["cost-center"] == "ml", obj["kind"]


def test_deployment_is_a_single_recreated_replica_with_probes(
    rendered: dict[str, list[dict]],
) -> None:
    deployment = one(rendered["defaults"], "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["operator"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == settings.LIVENESS_PORT
    assert ports["metrics"] == settings.DEFAULT_METRICS_PORT
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == settings.LIVENESS_PATH
        assert ports[get["port"]] == settings.LIVENESS_PORT
    limits = container["resources"].get("limits", {})
    assert "memory" in limits and "memory" in container["resources"]["requests"]


def test_service_selects_the_operator_pod_on_the_metrics_port(
    rendered: dict[str, list[dict]],
) -> None:
    objects = rendered["defaults"]
    deployment, service = one(objects, "Deployment"), metrics_service(objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (port,) = service["spec"]["ports"]
    container_ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert port["targetPort"] in {p["name"] for p in container_ports}


# --------------------------------------------------------------------------- monitors

# The fields of monitoring.coreos.com/v1 ServiceMonitor and PodMonitor this chart uses, with
# their types and patterns from the Prometheus Operator CRDs. Unknown fields are errors here
# (the real CRDs would prune them silently, which hides typos).
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                        r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"], "additionalProperties": False,
            "properties": {"key": {"type": "string"},
                           "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
_NAMESPACE_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {"any": {"type": "boolean"},
                   "matchNames": {"type": "array", "items": {"type": "string"}}},
}
_RELABELING = {
    "type": "object", "additionalProperties": False,
    "properties": {"sourceLabels": {"type": "array", "items": {"type": "string"}},
                   "targetLabel": {"type": "string"}, "regex": {"type": "string"},
                   "replacement": {"type": "string"}, "separator": {"type": "string"},
                   "action": {"enum": ["replace", "keep", "drop", "labeldrop", "labelkeep",
                                       "labelmap", "hashmod", "lowercase", "uppercase",
                                       "keepequal", "dropequal", "Replace", "Keep", "Drop",
                                       "LabelDrop", "LabelKeep", "LabelMap", "HashMod"]}},
}
_ENDPOINT = {
    "type": "object", "additionalProperties": False, "required": ["port"],
    "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                   "interval": _DURATION, "scrapeTimeout": _DURATION,
                   "honorLabels": {"type": "boolean"},
                   "relabelings": {"type": "array", "items": _RELABELING},
                   "metricRelabelings": {"type": "array", "items": _RELABELING}},
}
_METADATA = {"type": "object", "required": ["name", "namespace", "labels"]}
MONITOR_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _METADATA,
            "spec": {"type": "object", "additionalProperties": False,
                     "required": ["selector", "endpoints"],
                     "properties": {"selector": _SELECTOR,
                                    "namespaceSelector": _NAMESPACE_SELECTOR,
                                    "endpoints": {"type": "array", "minItems": 1,
                                                  "items": _ENDPOINT}}},
        },
    },
    "PodMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _METADATA,
            "spec": {"type": "object", "additionalProperties": False,
                     "required": ["selector", "podMetricsEndpoints"],
                     "properties": {"selector": _SELECTOR,
                                    "namespaceSelector": _NAMESPACE_SELECTOR,
                                    "podMetricsEndpoints": {"type": "array", "minItems": 1,
                                                            "items": _ENDPOINT}}},
        },
    },
}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


def test_monitors_are_off_by_default(rendered: dict[str, list[dict]]) -> None:
    kinds = {o["kind"] for o in rendered["defaults"]}
    assert not kinds & PROMETHEUS_OPERATOR_KINDS


def test_monitors_have_the_prometheus_operator_shape(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["monitoring-values.yaml"]
    for kind, schema in MONITOR_SCHEMAS.items():
        monitor = one(objects, kind)
        jsonschema.validate(monitor, schema)
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
        for ep in endpoints:
            assert _seconds(ep["scrapeTimeout"]) <= _seconds(ep["interval"])
            # The operator's own samples name each job's namespace: kept. A training pod
            # runs tenant code: its samples must not name their namespace (issue 20).
            assert ep["honorLabels"] is (kind == "ServiceMonitor")


def test_monitor_shape_check_catches_a_typo(rendered: dict[str, list[dict]]) -> None:
    monitor = one(rendered["monitoring-values.yaml"], "PodMonitor")
    broken = yaml.safe_load(yaml.safe_dump(monitor))
    broken["spec"]["podMetricEndpoints"] = broken["spec"].pop("podMetricsEndpoints")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, MONITOR_SCHEMAS["PodMonitor"])


def test_service_monitor_selects_the_metrics_service(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["monitoring-values.yaml"]
    monitor, service = one(objects, "ServiceMonitor"), metrics_service(objects)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def _trainer_pod_template(namespace: str = "team-a", ranks: int = 1) -> dict:
    """The pod template the operator really renders for a 2-node CPU job of `ranks` ranks per
    pod."""
    from finetune_contract import api
    from finetune_operator import render

    spec = api.FineTuneJobSpec.model_validate({
        "model": {"name": "tiny", "init": "random",
                  "config": {"model_type": "llama", "hidden_size": 64}},
        "dataset": {"train": {"path": "train.jsonl"}},
        "resources": {"gpu": "cpu", "gpusPerNode": ranks, "maxNodes": 2, "nodes": 2},
    })
    plan = api.Plan(
        parameters=1000, trainable_parameters=1000, strategy="ddp", nodes=2,
        gpus_per_node=ranks, world_size=2 * ranks, gpu="cpu", gpu_memory=2**30,
        precision="fp32", micro_batch_size=1, gradient_accumulation=1,
        global_batch_size=2 * ranks, gradient_checkpointing=False, fits=True, reason="test",
        memory_per_gpu=api.MemoryBreakdown(),
    )
    owner = render.Owner(name="tiny-chat", namespace=namespace, uid="uid-1")
    job = render.batch_job(owner, spec, plan, settings.Settings(), 0)
    return job["spec"]["template"]


def _metrics_ports(template: dict) -> list[str]:
    return [p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])
            if p["name"] != "rendezvous"]


def test_pod_monitor_selects_the_trainer_pods_the_operator_renders(
    rendered: dict[str, list[dict]],
) -> None:
    monitor = one(rendered["monitoring-values.yaml"], "PodMonitor")
    template = _trainer_pod_template()
    labels = template["metadata"]["labels"]
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"].items() <= labels.items()
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "Exists" and expr["key"] in labels
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


@pytest.mark.parametrize("ranks", [1, 2, 8])
def test_pod_monitor_scrapes_every_local_rank_of_a_trainer_pod(
    rendered: dict[str, list[dict]], ranks: int,
) -> None:
    """One endpoint per metrics port of a pod of ranksPerPod ranks (8 by default), so that a
    pod of up to that many ranks has every rank scraped, not only local rank 0."""
    monitor = one(rendered["monitoring-values.yaml"], "PodMonitor")
    endpoints = [ep["port"] for ep in monitor["spec"]["podMetricsEndpoints"]]
    per_pod = values_of("monitoring-values.yaml")["podMonitor"]["ranksPerPod"]
    assert endpoints == _metrics_ports(_trainer_pod_template(ranks=per_pod))
    assert set(_metrics_ports(_trainer_pod_template(ranks=ranks))) <= set(endpoints)


def test_pod_monitor_endpoints_follow_ranks_per_pod(helm: str) -> None:
    objects = helm_template(helm, "--set", "podMonitor.enabled=true",
                            "--set", "podMonitor.ranksPerPod=16")
    endpoints = [ep["port"] for ep in one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"]]
    assert endpoints == _metrics_ports(_trainer_pod_template(ranks=16))


def test_pod_monitor_follows_watched_namespaces(helm: str) -> None:
    objects = helm_template(helm, *values_args("namespaced-values.yaml"),
                            "--set", "podMonitor.enabled=true")
    monitor = one(objects, "PodMonitor")
    watched = values_of("namespaced-values.yaml")["operator"]["watchNamespaces"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": watched}


# --------------------------------------------------------------------------- dashboard


def test_dashboard_config_map_carries_the_dashboard(rendered: dict[str, list[dict]]) -> None:
    cm = one(rendered["monitoring-values.yaml"], "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Training"}
    (text,) = cm["data"].values()
    import json

    assert json.loads(text) == dashboard()


def test_dashboard_covers_the_required_panels() -> None:
    titles = [p["title"].lower() for p in dashboard()["panels"] if p["type"] != "row"]
    for topic in ("tokens per second", "training loss", "eval loss", "step progress",
                  "gpu memory", "restarts"):
        assert any(topic in t for t in titles), f"no panel about {topic}: {titles}"


def _dashboard_exprs() -> list[str]:
    exprs = []
    for panel in dashboard()["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def _exported_series() -> dict[str, set[str]]:
    """Sample name -> label names, from the operator's and a trainer rank's real registries."""
    from finetune_contract.api import CostRange, Goodput, Progress
    from finetune_operator.metrics import OperatorMetrics
    from finetune_trainer.metrics import RankMetrics
    from prometheus_client import CollectorRegistry

    operator = OperatorMetrics(CollectorRegistry())
    operator.observe_phase("team-a", "tiny-chat", "Running")
    operator.observe_progress("team-a", "tiny-chat", Progress(
        step=1, total_steps=4, loss=2.0, tokens_per_second=100.0))
    operator.reconcile_seconds.observe(0.1)
    operator.restarts.labels("team-a", "tiny-chat").inc()
    operator.observe_goodput("team-a", "tiny-chat", Goodput(
        ratio=0.8, tokens_per_second_per_gpu=50.0, mfu=0.3, gpu_hours=1.0,
        cost_usd=CostRange(low=1.0, high=2.0)))
    rank = RankMetrics("team-a", "tiny-chat", 0, CollectorRegistry())
    series: dict[str, set[str]] = {}
    for registry in (operator.registry, rank.registry):
        for family in registry.collect():
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


_SELECTOR_RE = re.compile(r"\b(finetune_[a-z0-9_]+)(\{[^}]*\})?")
_BY_RE = re.compile(r"\bby\s*\(([^)]*)\)")


def test_every_dashboard_metric_is_exported_by_the_code() -> None:
    series = _exported_series()
    names = {m.group(1) for e in _dashboard_exprs() for m in _SELECTOR_RE.finditer(e)}
    assert len(names) >= 8, names
    missing = sorted(n for n in names if n not in series)
    assert not missing, f"the dashboard queries metrics no code exports: {missing}"


def test_dashboard_uses_only_labels_its_metrics_carry() -> None:
    series = _exported_series()
    problems = []
    for expr in _dashboard_exprs():
        metrics = [(m.group(1), m.group(2) or "") for m in _SELECTOR_RE.finditer(expr)]
        grouped = {label.strip() for by in _BY_RE.findall(expr) for label in by.split(",")}
        for name, selector in metrics:
            have = series.get(name, set())
            used = set(re.findall(r"([a-zA-Z_]+)\s*(?:=~|!~|!=|=)", selector)) | grouped
            if used - have:
                problems.append(f"{name} lacks {sorted(used - have)} (has {sorted(have)})")
    assert not problems, problems


def test_dashboard_never_adds_up_what_every_rank_reports() -> None:
    """Every rank reports job-wide values (tokens/s and tokens of all ranks, the step, the
    averaged loss): a trainer gauge is read from rank 0 or kept per rank, never summed over
    ranks. tests/chart/test_dashboard.py checks the same against a real Prometheus."""
    problems = []
    for expr in _dashboard_exprs():
        if expr.startswith("label_values("):
            continue  # a template variable's choices, not a value
        trainer = [m for m in _SELECTOR_RE.finditer(expr)
                   if m.group(1).startswith(("finetune_train_", "finetune_eval_"))]
        per_rank = any("rank" in {label.strip() for label in by.split(",")}
                       for by in _BY_RE.findall(expr))
        for match in trainer:
            if 'rank="0"' not in (match.group(2) or "") and not per_rank:
                problems.append(f"{match.group(1)}: neither rank=\"0\" nor kept per rank")
        if trainer and re.search(r"\b(sum|count|avg)\b", expr):
            problems.append(f"adds up ranks: {expr}")
    assert not problems, problems


def test_dashboard_filters_on_labels_the_metrics_carry() -> None:
    exprs = "\n".join(_dashboard_exprs())
    # The trainer labels samples namespace/finetunejob/rank; never `job` (Prometheus's own).
    assert 'finetunejob=~"$finetunejob"' in exprs
    assert not re.search(r"\bjob\s*=~?", exprs)


# --------------------------------------------------------------------------- CRD, NOTES


def test_chart_crd_is_identical_to_the_generated_crd() -> None:
    chart_copy = (CHART / "crds" / "finetunejob.yaml").read_bytes()
    assert chart_copy == (ROOT / "crds" / "finetunejob.yaml").read_bytes(), (
        "charts/finetune-operator/crds/finetunejob.yaml differs from crds/: run `make crd`")
    assert chart_copy.decode() == crd_yaml(), "the CRD is stale: run `make crd`"


def test_notes_tell_the_user_what_to_do_next(helm: str) -> None:
    for value_set, expect in (("defaults", "every namespace"),
                              ("namespaced-values.yaml", "team-a, team-b")):
        out = subprocess.run(
            [helm, "install", RELEASE, str(CHART), "--dry-run=client", "--namespace",
             NAMESPACE, *values_args(value_set)],
            check=False, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        notes = out.stdout.split("NOTES:", 1)[1]
        assert expect in notes
        assert "kubectl apply" in notes and "kubectl get ftj" in notes
        assert "finetune validate" in notes


# --------------------------------------------------------------------------- docs

# Values whose contents are free-form Kubernetes structures, documented as a whole.
_OPAQUE = {"resources", "podSecurityContext", "securityContext", "livenessProbe",
           "readinessProbe", "labels", "annotations", "nodeSelector", "affinity",
           "podAnnotations", "podLabels", "commonLabels"}


def _value_paths(values: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in _OPAQUE:
            paths += _value_paths(value, path + ".")
        else:
            paths.append(path)
    return paths


def test_every_value_is_documented_in_the_install_guide() -> None:
    guide = (ROOT / "docs" / "install.md").read_text()
    paths = _value_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert len(paths) > 30
    missing = [p for p in paths if f"`{p}`" not in guide]
    assert not missing, f"docs/install.md does not document: {missing}"


def test_install_guide_lists_exactly_the_rbac_rules() -> None:
    guide = (ROOT / "docs" / "install.md").read_text()
    section = guide.split("## RBAC and namespaces", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| (`[^`]+`|core) \| `([^`]+)` \| ([a-z, ]+) \|", section, re.MULTILINE)
    documented = [{"apiGroups": ["" if g == "core" else g.strip("`")], "resources": [r],
                   "verbs": [v.strip() for v in verbs.split(",")]} for g, r, verbs in table]
    assert documented == permissions.as_policy_rules()
