"""A job the operator fails on (an exception while planning it) fails alone: it ends Failed
with reason InternalError and a short message, its traceback is logged once, and the jobs
created before and after it are planned with their children by the same operator process.

The exception is injected with a sitecustomize module on the operator process's PYTHONPATH:
it wraps the planner the lifecycle calls and raises, with a 100 kB message, for the job
whose training seed is BOOM_SEED (a field nothing else reads while planning).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from finetune_operator.caps import MAX_MESSAGE

from tests.support.ftj_samples import spec_dict
from tests.support.kube_faults import finetunejobs, operator_against_emulator, phases
from tests.support.wiring import Kube, wait_for

NS = "internal-error"
BOOM_SEED = 4242
# A short resync: the bad job would be retried (and its traceback logged) every second.
FAST = {"FINETUNE_RESYNC_INTERVAL": "1", "FINETUNE_PROGRESS_INTERVAL": "0.5"}
WAIT = 60.0
INJECTION = f'''
import finetune_operator.lifecycle.machine as machine

_real_plan_job = machine.plan_job


def _plan_job(spec, **kwargs):
    if spec.training.seed == {BOOM_SEED}:
        raise ZeroDivisionError("injected while planning " + "x" * 100_000)
    return _real_plan_job(spec, **kwargs)


machine.plan_job = _plan_job
'''


def injected_env(folder: Path) -> dict[str, str]:
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(INJECTION, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {**FAST, "PYTHONPATH": path}


def children_of(cluster, name: str) -> bool:
    status = finetunejobs(cluster, NS).get(name, {}).get("status") or {}
    return any(c.get("type") == "Created" and c.get("status") == "True"
               for c in status.get("conditions") or [])


@pytest.mark.reliability
def test_an_exception_while_planning_fails_only_that_job_once(tmp_path):
    env = injected_env(tmp_path / "inject")
    with operator_against_emulator(tmp_path, env) as (cluster, operator):
        kube = Kube()
        kube.apply(NS, "before", spec_dict())
        kube.apply(NS, "boom", spec_dict(training={"seed": BOOM_SEED}))
        kube.apply(NS, "after", spec_dict())
        wait_for("the bad job Failed and the others planned with their children",
                 lambda: phases(cluster, NS) == {"before": "Pending", "boom": "Failed",
                                                 "after": "Pending"}
                 and children_of(cluster, "before") and children_of(cluster, "after"),
                 timeout=WAIT, detail=lambda: phases(cluster, NS))
        time.sleep(3)  # three resyncs: none may decide about the failed job again
        status = finetunejobs(cluster, NS)["boom"]["status"]
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True" and failed["reason"] == "InternalError"
        message = status["message"]
        assert message == failed["message"]
        assert len(message) <= MAX_MESSAGE
        assert f"{NS}/boom" in message and "ZeroDivisionError" in message
        assert operator.process.poll() is None  # the operator lives on
        log = operator.log_path.read_text(encoding="utf-8", errors="replace")
        assert log.count("ZeroDivisionError: injected while planning") == 1, \
            "the traceback is logged once, not at every resync"
