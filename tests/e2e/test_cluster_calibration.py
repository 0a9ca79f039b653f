"""Memory calibration on the real cluster (issue 22): the tiny example job runs to Succeeded,
the operator records its ranks' measured peak over the planner's estimate in the ConfigMap
finetune-calibration of its namespace, and a second job of the same model family, strategy
and GPU type is planned with it: its status.plan.calibration names the entry, and its memory
per rank is the estimate scaled by the entry's factor. `finetune plan --calibration` with the
ConfigMap as kubectl prints it makes the same plan.

Other e2e modules record into the same ConfigMap (their jobs are tiny llama ddp runs on cpu
too): the checks hold for whatever else the entry holds, as long as no other job finishes
while this module runs (the e2e modules run one after another).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from finetune_operator import calibration as cal
from finetune_operator import names
from finetune_operator.cli import main

from tests.conftest import ROOT
from tests.e2e.cluster import OPERATOR_NAMESPACE, Cluster, wait_until
from tests.e2e.conftest import wait_for_phase

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "ftj-calibration"
MEASURED, PLANNED = "measured", "planned"
STEPS = 200  # long enough for several progress reads (every 5 s) while it runs
RUN_TIMEOUT = 1200


def tiny_job(name: str, *, suspend: bool = False) -> dict[str, Any]:
    """examples/tiny-chat-k8s.yaml (2 pods x 1 CPU rank, ddp), short, its output on an
    emptyDir: what is measured is the memory, not the model."""
    job = yaml.safe_load((ROOT / "examples" / "tiny-chat-k8s.yaml").read_text())
    job["metadata"] = {"name": name, "namespace": NAMESPACE}
    spec = job["spec"]
    spec["training"].update(maxSteps=STEPS, evalSteps=STEPS, saveSteps=STEPS)
    spec.pop("output")
    if suspend:  # planned, its Job created suspended: no pod runs
        spec["runPolicy"]["suspend"] = True
    return job


def calibration_data(cluster: Cluster) -> dict[str, str]:
    """The ConfigMap's data; {} before the first job of the cluster was recorded."""
    got = cluster.kubectl("get", "configmap", names.CALIBRATION_CONFIG_MAP, "-n",
                          OPERATOR_NAMESPACE, "-o", "json", check=False)
    return (json.loads(got.stdout).get("data") or {}) if got.ok else {}


@pytest.fixture(scope="module")
def runs(cluster: Cluster, operator_release: str, tmp_path_factory) -> Iterator[dict[str, Any]]:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=300)
    cluster.restricted_namespace(NAMESPACE)
    out: dict[str, Any] = {}
    cluster.apply_text(yaml.safe_dump(tiny_job(MEASURED)))
    phase = wait_for_phase(cluster, NAMESPACE, MEASURED, {"Succeeded", "Failed"}, RUN_TIMEOUT)
    assert phase == "Succeeded", cluster.diagnostics(NAMESPACE)
    out["measured"] = cluster.get("ftj", MEASURED, "-n", NAMESPACE)
    out["data_after_run"] = wait_until(
        "the ConfigMap to hold the finished job's run",
        lambda: (data if _holds(data := calibration_data(cluster), out["measured"]) else None),
        60, on_timeout=lambda: (
            f"status.memory {cluster.get('ftj', MEASURED, '-n', NAMESPACE)['status'].get('memory')}"
            f", data {calibration_data(cluster)}\n{cluster.diagnostics(NAMESPACE)}"))
    planned = tiny_job(PLANNED, suspend=True)
    cluster.apply_text(yaml.safe_dump(planned))
    out["planned"] = wait_until(
        "the second job's plan",
        lambda: (obj if (obj := cluster.get("ftj", PLANNED, "-n", NAMESPACE)).get(
            "status", {}).get("plan") else None), 120,
        on_timeout=lambda: cluster.diagnostics(NAMESPACE))
    out["data_at_plan"] = calibration_data(cluster)
    folder = tmp_path_factory.mktemp("calibration")
    manifest = folder / "calibration.yaml"
    manifest.write_text(cluster.kubectl("get", "configmap", names.CALIBRATION_CONFIG_MAP, "-n",
                                        OPERATOR_NAMESPACE, "-o", "yaml").stdout)
    job_file = folder / "job.yaml"
    job_file.write_text(yaml.safe_dump(planned))
    out["files"] = (job_file, manifest)
    yield out
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=300, check=False)


def _holds(data: dict[str, str], job: dict[str, Any]) -> bool:
    key = (job.get("status", {}).get("plan", {}).get("calibration") or {}).get("key")
    return bool(key) and job["metadata"]["uid"] in data.get(key, "")


def _entry(data: dict[str, str], key: str) -> cal.Entry:
    table, problems = cal.parse(data)
    assert not problems, problems
    return table[key]


def test_the_finished_jobs_reading_is_recorded_once_against_the_estimate(runs) -> None:
    job = runs["measured"]
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    plan, memory = status["plan"], status["memory"]
    assert plan["calibration"]["key"] == "llama.ddp.cpu"
    assert memory["ranksRead"] == plan["worldSize"] == 2 and memory["recorded"] is True
    recorded = [r for r in _entry(runs["data_after_run"], "llama.ddp.cpu").recent
                if r.uid == job["metadata"]["uid"]]
    assert len(recorded) == 1
    (run,) = recorded
    assert run.job == f"{NAMESPACE}/{MEASURED}"
    assert run.ratio == round(memory["measuredBytes"] / plan["calibration"]["estimatedBytes"], 3)
    print(f"measured {memory['measuredBytes']} bytes a rank against an estimate of "
          f"{plan['calibration']['estimatedBytes']}: ratio {run.ratio}")


def test_a_later_job_of_the_same_key_is_planned_with_the_entry(runs) -> None:
    first = runs["measured"]["status"]["plan"]
    plan = runs["planned"]["status"]["plan"]
    calibration = plan["calibration"]
    entry = _entry(runs["data_at_plan"], "llama.ddp.cpu")
    factor = cal.factor({"llama.ddp.cpu": entry}, cal.Key("llama", "ddp", "cpu"))
    assert factor is not None
    assert (calibration["key"], calibration["modelFamily"]) == ("llama.ddp.cpu", "llama")
    assert calibration["runs"] == factor.runs >= 1
    assert calibration["factor"] == factor.value
    # The same spec: the same estimate, scaled by the factor.
    assert calibration["estimatedBytes"] == first["calibration"]["estimatedBytes"]
    assert plan["memoryPerGpu"]["total"] == math.ceil(calibration["estimatedBytes"]
                                                      * factor.value)
    assert "memory calibrated" in plan["reason"]


def test_finetune_plan_with_the_configmap_kubectl_prints_makes_the_operators_plan(
        runs, capsys) -> None:
    job_file, manifest = runs["files"]
    assert main(["plan", str(job_file), "--calibration", str(manifest), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    operator = copy.deepcopy(runs["planned"]["status"]["plan"])
    assert local["calibration"] == operator["calibration"]
    assert local["memoryPerGpu"] == operator["memoryPerGpu"]
    assert (local["strategy"], local["nodes"], local["gpusPerNode"]) == (
        operator["strategy"], operator["nodes"], operator["gpusPerNode"])
