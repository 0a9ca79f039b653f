"""One-pod training jobs with their checkpoints on the node's disk, for the real-cluster tests
that interrupt a run and check where it resumes (test_cluster_faults, test_cluster_kueue)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.e2e.cluster import CLUSTER_STATE, Cluster


def one_pod_job(namespace: str, name: str, steps: int, save: int) -> dict[str, Any]:
    """examples/tiny-chat-k8s.yaml on one pod: `steps` steps, a checkpoint every `save`, its
    output on the claim that volume() makes."""
    job = yaml.safe_load((ROOT / "examples" / "tiny-chat-k8s.yaml").read_text())
    job["metadata"] = {"name": name, "namespace": namespace}
    spec = job["spec"]
    spec["resources"].update(nodes=1, maxNodes=1)
    spec["training"].update(maxSteps=steps, saveSteps=save, evalSteps=save, saveTotalLimit=3)
    spec["output"] = {"pvc": f"{name}-output"}
    return job


def volume(cluster: Cluster, namespace: str, name: str) -> Path:
    """A claim {name}-output bound to a hostPath PersistentVolume on the node's disk (the
    checkpoints must outlive the pod); returns the folder."""
    path = CLUSTER_STATE / "volumes" / f"{namespace}-{name}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.chown(path, 1000, 1000)  # the trainer image's user; hostPath ignores fsGroup
    claim = f"{name}-output"
    cluster.kubectl("delete", "pv", f"{namespace}-{name}", "--ignore-not-found")
    cluster.apply_text(json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{name}"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain",
                 "claimRef": {"namespace": namespace, "name": claim},
                 "hostPath": {"path": str(path), "type": "Directory"}}}))
    cluster.apply_text(json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "volumeName": f"{namespace}-{name}",
                 "resources": {"requests": {"storage": "1Gi"}}}}))
    return path


def delete_volume(cluster: Cluster, namespace: str, name: str) -> None:
    cluster.kubectl("delete", "pv", f"{namespace}-{name}", "--ignore-not-found", check=False)


def running_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """A running pod of FineTuneJob `name` that is not being deleted."""
    pods = cluster.get("pods", "-n", namespace, "-l", f"finetune.dev/job={name}")["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"
               and not p["metadata"].get("deletionTimestamp")]
    return running[0] if running else None


def newest_complete(volume: Path) -> int | None:
    """The step of the newest checkpoint with its COMPLETE marker."""
    steps = [int(m[1]) for d in volume.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", d.name)) and (d / "COMPLETE").exists()]
    return max(steps, default=None)


def summary(volume: Path) -> dict[str, Any]:
    """training_summary.json of a finished run ({} when there is none)."""
    path = volume / "training_summary.json"
    return json.loads(path.read_text()) if path.exists() else {}
