"""kopf registrations of the finetune operator, and nothing else.

Run by `finetune operator` (or `kopf run -m finetune_operator.main`). Settings are read from
the environment when this module is imported. kopf delivers the watch events; the handlers
record what they saw and tell the work loop (controller/workloop.py) which job to reconcile.
Only watch (on.event) handlers are registered: kopf then never patches a FineTuneJob (no
finalizer, no bookkeeping annotations), and removes a finalizer an older version left.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from finetune_contract import api

from finetune_operator import names
from finetune_operator import settings as operator_settings
from finetune_operator.controller.kube import Cluster, load_client_config
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.controller.schedule import Schedule
from finetune_operator.controller.watch import JobStates, is_running, reconcile_wanted
from finetune_operator.controller.workloop import WorkLoop
from finetune_operator.metrics import OperatorMetrics

SETTINGS = operator_settings.from_env()
FINETUNEJOBS = (api.GROUP, api.VERSION, api.PLURAL)

# The metrics registry and server outlive one kopf run (tests start the operator repeatedly).
METRICS = OperatorMetrics()
_serving: set[int] = set()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.scanning.disabled = True  # no CRD or namespace watching: see permissions.py
    settings.posting.enabled = False  # Events are the operator's own (Cluster.post_event)
    logging.getLogger().setLevel(SETTINGS.log_level)
    if logging.getLevelName(SETTINGS.log_level) > logging.DEBUG:
        # kopf logs "Handler ... succeeded" for every watch event (several lines per job,
        # at INFO); its warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    load_client_config()
    if SETTINGS.metrics_port not in _serving:
        METRICS.serve(SETTINGS.metrics_port)
        _serving.add(SETTINGS.metrics_port)
    memo.reconciler = Reconciler(Cluster(METRICS), SETTINGS, METRICS)
    memo.jobs = JobStates()
    memo.work = WorkLoop(memo.reconciler,
                         Schedule(SETTINGS.resync_interval, SETTINGS.progress_interval))
    memo.work.start()


@kopf.on.probe(id="work_loop")
def work_loop_alive(memo: kopf.Memo, **_: Any) -> bool:
    """Part of the liveness endpoint: a failing probe makes kopf answer 500."""
    if not memo.work.alive():
        raise RuntimeError("the work loop has stopped: nothing is reconciled any more")
    return True


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.work.stop()


@kopf.on.event(*FINETUNEJOBS)
async def finetunejob_event(type: str, body: kopf.Body, namespace: str, name: str,
                            memo: kopf.Memo, **_: Any) -> None:
    """Every event of a job: keep its body for the reconciles (no GET per trigger), and
    reconcile when it is new here or its spec changed. A deleted job: drop its metrics; its
    children go with it (ownerReferences)."""
    key = (namespace, name)
    if type == "DELETED":
        memo.work.forget(key)
        # forget waits for an in-flight reconcile: not on the event loop
        await asyncio.to_thread(memo.reconciler.forget, namespace, name)
        return
    previous = memo.reconciler.cluster.remember(body)
    if reconcile_wanted(previous, body):
        memo.work.trigger(key)
    memo.work.follow_progress(key, is_running(body))


@kopf.on.event("batch", "v1", "jobs", labels={names.MANAGED_BY_LABEL: names.MANAGER})
async def job_event(type: str, body: kopf.Body, namespace: str, memo: kopf.Memo,
                    **_: Any) -> None:
    """A Job of ours changed (pods started, a rank failed, it finished): reconcile its
    FineTuneJob at once. Events that change nothing the lifecycle reads are skipped."""
    owner = (body.get("metadata", {}).get("labels") or {}).get(names.JOB_LABEL)
    if owner and memo.jobs.changed(type, body):
        memo.work.trigger((namespace, owner))
