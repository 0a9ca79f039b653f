"""Render the Helm chart with the real helm binary and index what comes out."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "finetune-operator"
RELEASE = "ft"
NAMESPACE = "finetune-system"
# A current Kubernetes release: the newest schemas kubernetes-validate ships.
KUBE_VERSION = "1.35.0"

# The value sets the chart is rendered with: the defaults plus the files in ci/ (the chart
# testing convention; ci/kind-values.yaml is also what `make kind-e2e` installs).
VALUE_FILES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
VALUE_SETS = ["defaults", *VALUE_FILES]


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "defaults" else ["-f", str(CHART / "ci" / value_set)]


def helm_template(helm: str, *args: str, include_crds: bool = False) -> list[dict[str, Any]]:
    """Objects `helm template` renders (None documents dropped)."""
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
           "--kube-version", KUBE_VERSION, *args]
    if include_crds:
        cmd.append("--include-crds")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise HelmError(out.stderr.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def metrics_service(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's metrics Service (the webhook has one of its own)."""
    found = [s for s in by_kind(objects, "Service")
             if s["metadata"]["name"].endswith("-metrics")]
    assert len(found) == 1, f"expected one metrics Service, got {len(found)}"
    return found[0]


def values_of(value_set: str) -> dict[str, Any]:
    """The chart's defaults merged with a value file (enough merging for these files)."""
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    if value_set != "defaults":
        _merge(merged, yaml.safe_load((CHART / "ci" / value_set).read_text()))
    return merged


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def dashboard() -> dict[str, Any]:
    return json.loads((CHART / "dashboards" / "finetune-operator.json").read_text())


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload the chart renders."""
    out = []
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((o["metadata"]["name"], o["spec"]))
    return out

