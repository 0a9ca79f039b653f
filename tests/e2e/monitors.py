"""The chart's PodMonitor and ServiceMonitor, translated into a plain Prometheus scrape config.

No Prometheus Operator runs on the local cluster, so the test does by hand what the
operator would do: each endpoint of a monitor becomes a scrape job (`podMonitor/<namespace>/
<name>/<index>`, the operator's name for it) with the relabelling rules that select the same
targets (labels, namespaces, named port: the PodMonitor has one endpoint per trainer local
rank, `metrics`, `metrics-1`...) and label the same way (honorLabels, relabelings, metricRelabelings).
Only the monitor fields the chart uses are translated; anything else is refused, so a new
field in the chart cannot be silently ignored.

Debian's Prometheus is built without Kubernetes service discovery, so `Discovery` plays its
part: it lists the pods and EndpointSlices and writes them, with the `__meta_kubernetes_*`
labels Kubernetes discovery would give them, to the file_sd files the jobs read. Prometheus
itself then applies the translated rules and scrapes.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

_POD_FIELDS = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings",
               "metricRelabelings"}
# A Prometheus Operator RelabelConfig field -> the Prometheus relabel_config key.
_RELABEL_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label",
                 "action": "action", "regex": "regex", "replacement": "replacement",
                 "separator": "separator"}
_SELECTOR_FIELDS = {"matchLabels", "matchExpressions"}


def _label_meta(role: str, key: str, suffix: str = "label") -> str:
    return f"__meta_kubernetes_{role}_{suffix}_{re.sub(r'[^a-zA-Z0-9_]', '_', key)}"


def _selector_rules(selector: dict[str, Any], role: str) -> list[dict[str, Any]]:
    unknown = set(selector) - _SELECTOR_FIELDS
    if unknown:
        raise ValueError(f"selector fields not translated: {sorted(unknown)}")
    rules = []
    for key, value in selector.get("matchLabels", {}).items():
        rules.append({"action": "keep", "source_labels": [_label_meta(role, key)],
                      "regex": re.escape(str(value))})
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] != "Exists":
            raise ValueError(f"matchExpressions operator not translated: {expr['operator']}")
        rules.append({"action": "keep", "source_labels":
                      [_label_meta(role, expr["key"], "labelpresent")], "regex": "true"})
    return rules


def _namespaces(spec: dict[str, Any], own_namespace: str) -> dict[str, Any]:
    selector = spec.get("namespaceSelector", {})
    if selector.get("any"):
        return {}
    return {"namespaces": {"names": selector.get("matchNames", [own_namespace])}}


def _relabel(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        unknown = set(rule) - set(_RELABEL_KEYS)
        if unknown:
            raise ValueError(f"relabeling fields not translated: {sorted(unknown)}")
        out.append({_RELABEL_KEYS[k]: (v.lower() if k == "action" else v)
                    for k, v in rule.items()})
    return out


def _job(name: str, role: str, endpoint: dict[str, Any], discovery: dict[str, Any],
         rules: list[dict[str, Any]]) -> dict[str, Any]:
    """A scrape job; `discovery` (role, namespaces, targets file) is kept for Discovery."""
    unknown = set(endpoint) - _POD_FIELDS
    if unknown:
        raise ValueError(f"endpoint fields not translated: {sorted(unknown)}")
    job: dict[str, Any] = {
        "job_name": name,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "file_sd_configs": [{"files": [discovery["file"]], "refresh_interval": "1s"}],
        "x-discovery": {"role": role, **discovery},
        # The operator appends an endpoint's own relabelings after its generated ones.
        "relabel_configs": rules + _relabel(endpoint.get("relabelings", [])),
    }
    if "metricRelabelings" in endpoint:
        job["metric_relabel_configs"] = _relabel(endpoint["metricRelabelings"])
    if "interval" in endpoint:
        job["scrape_interval"] = endpoint["interval"]
    if "scrapeTimeout" in endpoint:
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    return job


def _targets_file(folder: Path, name: str) -> str:
    return str(folder / (re.sub(r"[^a-zA-Z0-9]+", "-", name) + ".json"))


def _pod_rules(port: str) -> list[dict[str, Any]]:
    return [
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
         "regex": port},
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_phase"],
         "regex": "Pending|Running"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]


def _endpoint_rules(port: str) -> list[dict[str, Any]]:
    return [
        {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
         "regex": port},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
    ]


# kind -> (its list of endpoints, discovery role, label role, rules for one endpoint's port)
_MONITORS = {
    "PodMonitor": ("podMetricsEndpoints", "pod", "pod", _pod_rules),
    "ServiceMonitor": ("endpoints", "endpoints", "service", _endpoint_rules),
}


def monitor_jobs(monitor: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """The scrape jobs of one PodMonitor or ServiceMonitor, one per endpoint."""
    meta, spec = monitor["metadata"], monitor["spec"]
    endpoints_key, role, label_role, port_rules = _MONITORS[monitor["kind"]]
    kind = monitor["kind"][0].lower() + monitor["kind"][1:]
    jobs = []
    for i, endpoint in enumerate(spec[endpoints_key]):
        name = f"{kind}/{meta['namespace']}/{meta['name']}/{i}"
        discovery = {"file": _targets_file(folder, name), **_namespaces(spec, meta["namespace"])}
        rules = _selector_rules(spec["selector"], label_role) + port_rules(endpoint["port"])
        jobs.append(_job(name, role, endpoint, discovery, rules))
    return jobs


def scrape_config(documents: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """A prometheus.yml for every PodMonitor and ServiceMonitor among `documents`, with
    each job's targets in a file under `folder`. Pass it through `prometheus_yaml` before
    Prometheus reads it."""
    jobs: list[dict[str, Any]] = []
    for doc in documents:
        if doc.get("kind") in _MONITORS:
            jobs += monitor_jobs(doc, folder)
    return {"global": {"scrape_interval": "15s"}, "scrape_configs": jobs}


def prometheus_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the discovery notes Prometheus does not know."""
    return {**config, "scrape_configs": [{k: v for k, v in job.items() if k != "x-discovery"}
                                         for job in config["scrape_configs"]]}


# ------------------------------------------------------------------- Kubernetes discovery


def _labels(role: str, labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in labels.items():
        out[_label_meta(role, key)] = value
        out[_label_meta(role, key, "labelpresent")] = "true"
    return out


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kubernetes discovery's `pod` role: one target per declared container port."""
    groups = []
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if not ip:
            continue
        meta = pod["metadata"]
        common = {"__meta_kubernetes_namespace": meta["namespace"],
                  "__meta_kubernetes_pod_name": meta["name"],
                  "__meta_kubernetes_pod_phase": pod["status"].get("phase", ""),
                  **_labels("pod", meta.get("labels", {}))}
        for container in pod["spec"]["containers"]:
            for port in container.get("ports", []):
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **common, "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", "")}})
    return groups


def endpoint_targets(slices: list[dict[str, Any]],
                     services: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Kubernetes discovery's `endpoints` role, read from EndpointSlices."""
    groups = []
    for piece in slices:
        meta = piece["metadata"]
        name = meta.get("labels", {}).get("kubernetes.io/service-name", "")
        service = services.get((meta["namespace"], name), {})
        common = {"__meta_kubernetes_namespace": meta["namespace"],
                  "__meta_kubernetes_service_name": name,
                  **_labels("service", service.get("metadata", {}).get("labels", {}))}
        for endpoint in piece.get("endpoints") or []:
            ref = endpoint.get("targetRef", {})
            for port in piece.get("ports") or []:
                for address in endpoint["addresses"]:
                    groups.append({"targets": [f"{address}:{port['port']}"], "labels": {
                        **common, "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                        "__meta_kubernetes_pod_name": ref.get("name", "")}})
    return groups


class Discovery:
    """Refreshes every job's targets file each second from `list_objects(kind)`, a function
    that returns the cluster's objects of that kind (pods, services, endpointslices)."""

    def __init__(self, config: dict[str, Any],
                 list_objects: Callable[[str], list[dict[str, Any]]]) -> None:
        self.jobs = [job["x-discovery"] for job in config["scrape_configs"]]
        self.list_objects = list_objects
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.last_error: Exception | None = None

    def refresh(self) -> None:
        pods = services = slices = None
        for job in self.jobs:
            names = job.get("namespaces", {}).get("names")
            if job["role"] == "pod":
                pods = pods if pods is not None else self.list_objects("pods")
                groups = pod_targets(_in(pods, names))
            else:
                services = services if services is not None else self.list_objects("services")
                slices = slices if slices is not None else self.list_objects("endpointslices")
                by_name = {(s["metadata"]["namespace"], s["metadata"]["name"]): s
                           for s in services}
                groups = endpoint_targets(_in(slices, names), by_name)
            path = Path(job["file"])
            path.with_suffix(".tmp").write_text(json.dumps(groups))
            path.with_suffix(".tmp").replace(path)  # Prometheus never reads half a file

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.refresh()
            except Exception as err:  # noqa: BLE001 - a failed listing is retried in a second
                self.last_error = err

    def __enter__(self) -> Self:
        self.refresh()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _in(objects: list[dict[str, Any]], namespaces: list[str] | None) -> list[dict[str, Any]]:
    if namespaces is None:
        return objects
    return [o for o in objects if o["metadata"]["namespace"] in namespaces]
