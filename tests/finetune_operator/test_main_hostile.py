"""Every generated hostile job (tests/support/hostile_jobs.py) through one operator process.

The cases are created one after another in one namespace, with valid jobs before, between and
after them, against one operator process. The operator must stay up inside the chart's memory
limit; every hostile job must end Failed naming its field, with one Warning Event and no
child; every valid job must still be planned with its children; no status may grow past a
bound (the API server refuses large writes, and the job then never gets an answer); the
planted token must appear nowhere; and nothing may be logged as a traceback.

The emulator checks no CRD schema, so the operator sees every case, including those a real
API server would refuse at `kubectl apply`: it must hold on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.support.ftj_samples import spec_dict
from tests.support.hostile_jobs import KINDS, TOKEN, all_cases, k8s_name
from tests.support.kube_faults import finetunejobs, operator_against_emulator, phases, stored
from tests.support.wiring import Kube

NS = "hostile"
# The emulator takes requests of at most 1 MiB (aiohttp's default; the real API server takes
# 3 MiB): a job bigger than that cannot be stored here. `finetune validate` and the render
# check's own tests cover it.
EMULATOR_REQUEST_LIMIT = 2**20
CASES = [case for case in all_cases() if len(json.dumps(case.spec)) < EMULATOR_REQUEST_LIMIT - 4096]
NAMES = {case.id: k8s_name(case.id) for case in CASES}
VALID = ["valid-first", "valid-middle", "valid-last"]
WAIT = 240.0
DEFAULT_INTERVALS = {"FINETUNE_RESYNC_INTERVAL": "10", "FINETUNE_PROGRESS_INTERVAL": "15"}
# A status the API server takes in one write, with room for every condition (etcd's request
# limit is 1.5 MiB; a status this large already means a value was copied in whole).
STATUS_BOUND = 64 * 1024


def chart_memory_limit() -> int:
    values = yaml.safe_load((ROOT / "charts" / "finetune-operator" / "values.yaml").read_text())
    limit = values["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    return int(limit.removesuffix("Mi")) * 2**20


def until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.5)


def warned(cluster: Any) -> set[str]:
    """The jobs with a Warning Event (posted right after the status it announces)."""
    return {e["involvedObject"]["name"] for e in stored(cluster, "events", NS)
            if e.get("type") == "Warning"}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("kube")
    with operator_against_emulator(tmp, DEFAULT_INTERVALS) as (cluster, operator):
        kube = Kube()
        kube.apply(NS, VALID[0], spec_dict())
        for i, case in enumerate(CASES):
            if i == len(CASES) // 2:
                kube.apply(NS, VALID[1], spec_dict())
            kube.apply(NS, NAMES[case.id], case.spec)
        kube.apply(NS, VALID[2], spec_dict())
        expected = {**dict.fromkeys(NAMES.values(), "Failed"),
                    **dict.fromkeys(VALID, "Pending")}
        # Waited for, not required here: each test below judges its own cases.
        until(lambda: phases(cluster, NS) == expected and warned(cluster) >= set(
            NAMES.values()), WAIT)
        jobs = finetunejobs(cluster, NS)
        yield {"cluster": cluster, "operator": operator, "alive": operator.process.poll(),
               "expected": expected, "phases": phases(cluster, NS),
               "rss": operator.rss_bytes(), "jobs": jobs, "events": stored(cluster, "events", NS)}


def test_the_corpus_covers_every_kind_with_generated_cases():
    per_kind = {kind: sum(case.kind == kind for case in CASES) for kind in KINDS}
    assert all(count >= 8 for count in per_kind.values()), per_kind
    assert len(set(NAMES.values())) == len(CASES), "two cases share a job name"


@pytest.mark.reliability
def test_every_job_gets_its_answer(outcome):
    wrong = {name: phase for name, phase in outcome["phases"].items()
             if phase != outcome["expected"].get(name)}
    assert wrong == {}
    assert set(outcome["phases"]) == set(outcome["expected"])


@pytest.mark.reliability
def test_the_operator_stays_up_inside_the_charts_memory_limit(outcome):
    assert outcome["alive"] is None, "the operator process exited"
    _, peak = outcome["rss"]
    assert peak < chart_memory_limit(), f"peak RSS {peak / 2**20:.0f} MiB"


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_hostile_job_fails_naming_its_field(outcome, case):
    status = outcome["jobs"][NAMES[case.id]].get("status") or {}
    assert status.get("phase") == "Failed"
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    refusals = [c["message"] for c in status["conditions"] if c["status"] == "False"]
    assert any(case.field in message for message in refusals), (case.field, refusals)
    assert failed["status"] == "True"
    assert len(json.dumps(status)) < STATUS_BOUND


@pytest.mark.reliability
def test_only_the_valid_jobs_have_children_and_each_hostile_job_one_warning(outcome):
    jobs = outcome["jobs"]
    valid_uids = {jobs[name]["metadata"]["uid"] for name in VALID}
    owners = {ref["uid"] for plural in ("configmaps", "services", "jobs")
              for obj in stored(outcome["cluster"], plural, NS)
              for ref in obj["metadata"]["ownerReferences"]}
    assert owners == valid_uids
    warnings: dict[str, int] = {}
    for event in outcome["events"]:
        if event.get("type") == "Warning":
            name = event["involvedObject"]["name"]
            warnings[name] = warnings.get(name, 0) + 1
    assert {name: warnings.get(name, 0) for name in NAMES.values()} == dict.fromkeys(
        NAMES.values(), 1)


@pytest.mark.reliability
def test_the_token_is_echoed_nowhere_and_nothing_logged_a_traceback(outcome):
    everything = json.dumps(outcome["events"]) + json.dumps(
        {n: j.get("status") for n, j in outcome["jobs"].items()})
    log = outcome["operator"].output()
    assert TOKEN not in everything
    assert TOKEN not in log
    assert "Traceback" not in log
