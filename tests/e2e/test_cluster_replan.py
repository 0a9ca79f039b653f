"""An edit of spec.resources on the real cluster (issue 21, elastic resume): a one-pod job
training on 2 CPU ranks is edited down to 1 mid-run. The operator re-plans it, suspends its
Job (the ranks write the emergency checkpoint on the SIGTERM), and starts the next attempt on
1 rank, which resumes from that checkpoint with the global batch kept and trains to the
planned last step. The move is no restart: the backoff budget stays whole."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.conftest import wait_for_phase
from tests.e2e.jobs import delete_volume, newest_complete, one_pod_job, running_pod, summary, volume

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "ftj-replan"
NAME = "resized"
STEPS, SAVE = 60, 10
RUN_TIMEOUT = 1200


@pytest.fixture(scope="module")
def resized(cluster: Cluster, operator_release: str) -> Iterator[dict[str, Any]]:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=300)
    cluster.restricted_namespace(NAMESPACE)
    path = volume(cluster, NAMESPACE, NAME)
    job = one_pod_job(NAMESPACE, NAME, STEPS, SAVE)
    job["spec"]["resources"]["gpusPerNode"] = 2
    cluster.apply_text(yaml.safe_dump(job))
    out: dict[str, Any] = {}
    wait_until("the 2-rank run to pass its first complete checkpoint",
               lambda: running_pod(cluster, NAMESPACE, NAME) is not None
               and newest_complete(path) is not None, RUN_TIMEOUT, interval=0.5,
               on_timeout=lambda: cluster.diagnostics(NAMESPACE))
    out["plan_before"] = cluster.get("ftj", NAME, "-n", NAMESPACE)["status"]["plan"]
    out["complete_at_edit"] = newest_complete(path)
    edited = time.monotonic()
    cluster.kubectl("patch", "ftj", NAME, "-n", NAMESPACE, "--type", "merge", "-p",
                    '{"spec": {"resources": {"gpusPerNode": 1}}}')
    wait_for_phase(cluster, NAMESPACE, NAME, {"Succeeded", "Failed"}, RUN_TIMEOUT)
    out["seconds"] = time.monotonic() - edited
    out["ftj"] = cluster.get("ftj", NAME, "-n", NAMESPACE)
    out["summary"] = summary(path)
    out["jobs"] = cluster.get("jobs", "-n", NAMESPACE, "-l", f"finetune.dev/job={NAME}")["items"]
    out["events"] = cluster.get("events", "-n", NAMESPACE, "--field-selector",
                                f"involvedObject.name={NAME}")["items"]
    print(f"re-planned from 2 ranks to 1: resumed from {out['summary'].get('resumedFrom')} "
          f"(checkpoint {out['complete_at_edit']} complete at the edit), Succeeded "
          f"{out['seconds']:.0f} s after the edit")
    yield out
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=300, check=False)
    delete_volume(cluster, NAMESPACE, NAME)


def test_the_edited_job_resumes_on_the_new_layout_and_finishes(resized: dict[str, Any]) -> None:
    status, summary_ = resized["ftj"]["status"], resized["summary"]
    assert status["phase"] == "Succeeded", status
    assert (status["replans"], status.get("restarts", 0)) == (1, 0), status
    assert status["plan"]["worldSize"] == 1
    assert summary_["strategy"]["worldSize"] == 1
    assert summary_["steps"] == STEPS
    resumed = re.search(r"checkpoint-(\d+)$", str(summary_.get("resumedFrom", "")))
    assert resumed, summary_.get("resumedFrom")
    assert resized["complete_at_edit"] <= int(resumed[1]) < STEPS


def test_the_global_batch_is_kept_across_the_move(resized: dict[str, Any]) -> None:
    before, after = resized["plan_before"], resized["ftj"]["status"]["plan"]
    assert before["worldSize"] == 2
    assert after["globalBatchSize"] == before["globalBatchSize"]
    assert after["microBatchSize"] * after["gradientAccumulation"] == \
        2 * before["microBatchSize"] * before["gradientAccumulation"]


def test_only_the_new_attempt_remains_and_the_events_tell_the_move(
        resized: dict[str, Any]) -> None:
    assert [j["metadata"]["name"] for j in resized["jobs"]] == [f"{NAME}-r1"]
    reasons = [e["reason"] for e in resized["events"]]
    assert "Replanning" in reasons and "Replanned" in reasons, reasons
    assert "Restarting" not in reasons, reasons
