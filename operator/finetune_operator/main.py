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
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from finetune_contract import api

from finetune_operator import admission, names
from finetune_operator import settings as operator_settings
from finetune_operator.controller import webhook_tls
from finetune_operator.controller.caches import spec_caches
from finetune_operator.controller.calibration import CalibrationStore
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
    cluster = Cluster(METRICS)
    calibration = (CalibrationStore(cluster, SETTINGS.calibration)
                   if SETTINGS.calibration is not None else None)
    memo.reconciler = Reconciler(cluster, SETTINGS, METRICS, calibration=calibration)
    memo.jobs = JobStates()
    memo.work = WorkLoop(memo.reconciler,
                         Schedule(SETTINGS.resync_interval, SETTINGS.progress_interval))
    memo.work.start()
    if SETTINGS.webhook is not None:
        settings.admission.server = await asyncio.to_thread(webhook_server, SETTINGS.webhook)


def webhook_server(webhook: operator_settings.WebhookSettings) -> kopf.WebhookServer:
    """kopf's HTTPS server for the admission webhook, with the certificate every replica
    shares (controller/webhook_tls.py), its CA injected unless cert-manager does that."""
    bundle = webhook_tls.serving_bundle(webhook, datetime.now(UTC))
    if not webhook.cert_dir:
        webhook_tls.inject_ca(webhook, bundle.ca_cert)
    certfile, pkeyfile = webhook_tls.write_files(bundle, Path(tempfile.mkdtemp(
        prefix="finetune-webhook-")))
    return kopf.WebhookServer(addr="0.0.0.0", port=webhook.port, host=webhook.service,
                              certfile=str(certfile), pkeyfile=str(pkeyfile))


def admit(body: kopf.Body, old: kopf.Body | None, namespace: str | None, memo: kopf.Memo,
          **_: Any) -> None:
    """The validating webhook (path /{names.WEBHOOK_ID}): refuse a new or edited spec that
    `finetune validate` would, naming the field, planned with the calibration the start of
    the job will use. The operator's own failure lets the job through: its status then says
    what the start of the job finds."""
    if not admission.spec_changed(old, body):
        return
    meta = body.get("metadata") or {}
    try:
        reconciler = getattr(memo, "reconciler", None)  # None before the startup handler ran
        problems = admission.refusals(
            dict(body), namespace or "", SETTINGS, caches=ADMISSION_CACHES,
            calibration=reconciler.calibration_table() if reconciler is not None else None)
    except Exception:
        logging.getLogger(__name__).exception("the admission check failed on FineTuneJob "
                                              "%s/%s; letting it through", namespace,
                                              meta.get("name"))
        return
    if problems:
        raise kopf.AdmissionError(f"FineTuneJob {namespace}/{meta.get('name')} refused: "
                                  + "; ".join(problems), code=422)


ADMISSION_CACHES = spec_caches()
if SETTINGS.webhook is not None:
    kopf.on.validate(*FINETUNEJOBS, id=names.WEBHOOK_ID,
                     operations=["CREATE", "UPDATE"])(admit)


@kopf.on.probe(id="webhook")
def webhook_listening(**_: Any) -> bool:
    """Part of the readiness endpoint: with the webhook on, the pod is ready once the API
    server can reach it (a FineTuneJob applied earlier would meet failurePolicy)."""
    if SETTINGS.webhook is None:
        return True
    try:
        socket.create_connection(("127.0.0.1", SETTINGS.webhook.port), timeout=1).close()
    except OSError as err:
        raise RuntimeError(f"the admission webhook does not listen on port "
                           f"{SETTINGS.webhook.port} yet: {err}") from err
    return True


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
