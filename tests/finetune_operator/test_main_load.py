"""200 FineTuneJobs created at once against the emulated API server: the operator (a process
of its own, default intervals) plans every one and creates its children, with no error.

Figures (printed as FIGURE lines, copied into docs/reliability.md, never asserted): time from
the first create to the last job planned with its children, and the operator's memory.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.ftj_samples import spec_dict
from tests.support.kube_faults import creations, operator_against_emulator, phases, stored
from tests.support.wiring import Kube, wait_for

JOBS = 200
NS = "load"
CREATORS = 8  # concurrent clients creating the jobs
DEFAULTS = {"FINETUNE_RESYNC_INTERVAL": "10", "FINETUNE_PROGRESS_INTERVAL": "15"}
TWO_NODES = {"gpu": "cpu", "gpusPerNode": 2, "nodes": 2, "maxNodes": 2, "strategy": "ddp"}


@pytest.mark.reliability
@pytest.mark.slow
def test_200_jobs_at_once_are_all_planned_with_their_children(tmp_path):
    with operator_against_emulator(tmp_path, DEFAULTS) as (cluster, operator):
        kube = Kube()
        operator.wait_metrics()
        idle_rss, _ = operator.rss_bytes()
        names = [f"job-{i:03d}" for i in range(JOBS)]
        started = time.monotonic()
        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(lambda n: kube.apply(NS, n, spec_dict(resources=TWO_NODES)), names))
        created = time.monotonic() - started
        wait_for("every job Pending", lambda: list(phases(cluster, NS).values()).count(
            "Pending") == JOBS, timeout=240,
            detail=lambda: sorted(set(phases(cluster, NS).values()), key=str))
        wait_for("every child", lambda: all(
            len(stored(cluster, p, NS)) == JOBS for p in ("configmaps", "services", "jobs")),
            timeout=60)
        last = time.monotonic() - started
        rss, peak = operator.rss_bytes()
        metrics = operator.metrics()
        log = operator.output()
    print(f"FIGURE load: {JOBS} jobs created in {created:.1f} s by {CREATORS} clients; last "
          f"planned with its children {last:.1f} s after the first create; operator RSS idle "
          f"{idle_rss / 2**20:.0f} MiB, after {rss / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB; "
          f"reconcile count {metrics[('finetune_operator_reconcile_seconds_count', ())]:.0f}, "
          f"total {metrics[('finetune_operator_reconcile_seconds_sum', ())]:.1f} s")
    for name in names:
        for plural, child in (("configmaps", f"{name}-trainer"), ("services", name),
                              ("jobs", f"{name}-r0")):
            assert creations(cluster, plural, NS, child) == 1, (plural, child)
    assert metrics[("finetune_operator_api_errors_total", ())] == 0
    assert metrics[("finetune_operator_jobs", (("phase", "Pending"),))] == JOBS
    assert "Traceback" not in log and "[ERROR" not in log
