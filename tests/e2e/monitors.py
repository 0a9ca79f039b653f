"""The chart's PodMonitor and ServiceMonitor, translated into a plain Prometheus scrape config.

No Prometheus Operator runs on the local cluster, so the test does by hand what the
operator would do: each monitor becomes a scrape job with Kubernetes service discovery and
the relabelling rules that select the same targets (labels, namespaces, named port) and
keep the same labels (honorLabels). Only the monitor fields the chart uses are translated;
anything else is refused, so a new field in the chart cannot be silently ignored.
"""

from __future__ import annotations

import re
from typing import Any

_POD_FIELDS = {"port", "path", "interval", "scrapeTimeout", "honorLabels"}
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


def _job(name: str, role: str, endpoint: dict[str, Any], discovery: dict[str, Any],
         rules: list[dict[str, Any]]) -> dict[str, Any]:
    unknown = set(endpoint) - _POD_FIELDS
    if unknown:
        raise ValueError(f"endpoint fields not translated: {sorted(unknown)}")
    job: dict[str, Any] = {
        "job_name": name,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "kubernetes_sd_configs": [{"role": role, **discovery}],
        "relabel_configs": rules,
    }
    if "interval" in endpoint:
        job["scrape_interval"] = endpoint["interval"]
    if "scrapeTimeout" in endpoint:
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    return job


def pod_monitor_jobs(monitor: dict[str, Any], kubeconfig: str) -> list[dict[str, Any]]:
    meta, spec = monitor["metadata"], monitor["spec"]
    discovery = {"kubeconfig_file": kubeconfig, **_namespaces(spec, meta["namespace"])}
    jobs = []
    for i, endpoint in enumerate(spec["podMetricsEndpoints"]):
        rules = _selector_rules(spec["selector"], "pod") + [
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": endpoint["port"]},
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_phase"],
             "regex": "Pending|Running"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
        jobs.append(_job(f"podMonitor/{meta['namespace']}/{meta['name']}/{i}", "pod",
                         endpoint, discovery, rules))
    return jobs


def service_monitor_jobs(monitor: dict[str, Any], kubeconfig: str) -> list[dict[str, Any]]:
    meta, spec = monitor["metadata"], monitor["spec"]
    discovery = {"kubeconfig_file": kubeconfig, **_namespaces(spec, meta["namespace"])}
    jobs = []
    for i, endpoint in enumerate(spec["endpoints"]):
        rules = _selector_rules(spec["selector"], "service") + [
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
             "regex": endpoint["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        ]
        jobs.append(_job(f"serviceMonitor/{meta['namespace']}/{meta['name']}/{i}",
                         "endpoints", endpoint, discovery, rules))
    return jobs


def scrape_config(documents: list[dict[str, Any]], kubeconfig: str) -> dict[str, Any]:
    """A prometheus.yml for every PodMonitor and ServiceMonitor among `documents`."""
    jobs: list[dict[str, Any]] = []
    for doc in documents:
        if doc.get("kind") == "PodMonitor":
            jobs += pod_monitor_jobs(doc, kubeconfig)
        elif doc.get("kind") == "ServiceMonitor":
            jobs += service_monitor_jobs(doc, kubeconfig)
    return {"global": {"scrape_interval": "15s"}, "scrape_configs": jobs}
