"""kopf registrations of the finetune operator, and nothing else.

Run by `finetune operator` (or `kopf run -m finetune_operator.main`). Settings are read from
the environment when this module is imported; the handlers only route to the Reconciler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from finetune_operator import api, render
from finetune_operator import settings as operator_settings
from finetune_operator.handlers.kube import Cluster, load_client_config
from finetune_operator.handlers.progress import refresh_progress
from finetune_operator.handlers.reconcile import Reconciler, event_ref
from finetune_operator.handlers.retry import retrying
from finetune_operator.lifecycle import Emit
from finetune_operator.metrics import OperatorMetrics

SETTINGS = operator_settings.from_env()
FINETUNEJOBS = (api.GROUP, api.VERSION, api.PLURAL)
# One annotation prefix for kopf's bookkeeping: status.kopf would be pruned by the CRD's
# structural status schema.
ANNOTATION_PREFIX = "finetune.dev"

# The metrics registry and server outlive one kopf run (tests start the operator repeatedly).
METRICS = OperatorMetrics()
_serving: set[int] = set()


def _emit(body: dict[str, Any], event: Emit) -> None:
    kopf.event(event_ref(body), type=event.type, reason=event.reason, message=event.message)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.scanning.disabled = True  # no CRD or namespace watching: see permissions.py
    settings.posting.level = logging.WARNING  # our own Events, not every log line
    # A deleted job's finalizer waits for its timers to exit; a sync timer caught mid-run is
    # checked again after this many seconds (kopf's default is 60).
    settings.background.cancellation_polling = 1.0
    logging.getLogger().setLevel(SETTINGS.log_level)
    load_client_config()
    if SETTINGS.metrics_port not in _serving:
        METRICS.serve(SETTINGS.metrics_port)
        _serving.add(SETTINGS.metrics_port)
    memo.reconciler = Reconciler(Cluster(METRICS), SETTINGS, METRICS, _emit)


@kopf.on.resume(*FINETUNEJOBS)
@kopf.on.create(*FINETUNEJOBS)
@kopf.on.update(*FINETUNEJOBS)
def changed(namespace: str, name: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    retrying(lambda: memo.reconciler.reconcile(namespace, name), retry)


# The first tick waits a whole interval: create and resume have just reconciled the job.
@kopf.timer(*FINETUNEJOBS, interval=SETTINGS.resync_interval,
            initial_delay=SETTINGS.resync_interval)
def resync(namespace: str, name: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    retrying(lambda: memo.reconciler.resync(namespace, name), retry)


@kopf.timer(*FINETUNEJOBS, interval=SETTINGS.progress_interval,
            when=lambda status, **_: (status or {}).get("phase") == "Running")
def progress(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    refresh_progress(memo.reconciler, namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={render.MANAGED_BY_LABEL: render.MANAGER})
def job_event(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """A Job of ours changed (pods started, a rank failed, it finished): react at once."""
    owner = (body.get("metadata", {}).get("labels") or {}).get(render.JOB_LABEL)
    if owner:
        memo.reconciler.reconcile(namespace, owner)


@kopf.on.event(*FINETUNEJOBS)
async def finetunejob_event(type: str, body: kopf.Body, namespace: str, name: str,
                            memo: kopf.Memo, **_: Any) -> None:
    """Every event of a job, before its other handlers: keep the body for the reconciles (no
    GET per trigger). A deleted job: drop its metrics; its children go with it
    (ownerReferences). Async (dict updates only) so it never waits for an executor thread
    behind reconciles, which would make the kept body lag."""
    if type == "DELETED":  # forget waits for an in-flight reconcile: not on the loop
        await asyncio.to_thread(memo.reconciler.forget, namespace, name)
    else:
        memo.reconciler.cluster.remember(body)
