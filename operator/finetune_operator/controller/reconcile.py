"""Reconcile one FineTuneJob: read it and its children, run the lifecycle, act, write status.

Every trigger (the job new or edited, the periodic resync, a change of one of its Jobs) ends
here, run by the work loop. A per-job lock serializes them, and the progress reads, within
this process.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import urllib3
from finetune_contract import api
from kubernetes.client.exceptions import ApiException

from finetune_operator.calibration import Table
from finetune_operator.controller import retry
from finetune_operator.controller.caches import spec_caches
from finetune_operator.controller.calibration import CalibrationConflict, CalibrationStore
from finetune_operator.controller.kube import Cluster, parse_status
from finetune_operator.lifecycle.actions import Create, Decision, Emit, RecordMemory
from finetune_operator.lifecycle.machine import (
    child_rejected,
    decide,
    internal_error,
    resync_due,
)
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.settings import Settings

log = logging.getLogger(__name__)


class NamespaceGone(Exception):
    """A child could not be created: the job's namespace is gone or being deleted."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobLocks:
    """One lock per (namespace, name): handlers of one job never overlap."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def __call__(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)


class Reconciler:
    def __init__(self, cluster: Cluster, settings: Settings, metrics: OperatorMetrics,
                 clock: Callable[[], datetime] = utcnow,
                 calibration: CalibrationStore | None = None) -> None:
        self.cluster = cluster
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        # The memory calibration table (settings.calibration); None: plans are uncalibrated.
        self.calibration = calibration
        self.locks = JobLocks()
        # The parsed specs of this process: the lifecycle reads them, never fills globals.
        self.caches = spec_caches()
        # (namespace, name) -> uid of a finished job whose last resync had nothing left to do
        self._settled: dict[tuple[str, str], str | None] = {}
        # (namespace, name) -> uid of a job whose last reconcile ran to its end (status
        # written): its next reconcile need not look for Jobs a failure left behind
        self._complete: dict[tuple[str, str], str | None] = {}

    def reconcile(self, namespace: str, name: str) -> None:
        with self.locks(namespace, name), self.metrics.reconcile_seconds.time():
            self._reconcile(namespace, name)

    def resync(self, namespace: str, name: str) -> None:
        """The periodic reconcile, skipped when the clock cannot change anything: a finished
        job whose TTL is not due, or whose children are gone already. Active jobs are always
        reconciled: their pods are not watched, and deadlines and Unschedulable are timed."""
        with self.locks(namespace, name):
            body = self.cluster.current_finetunejob(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            meta = body["metadata"]
            if self._settled.get((namespace, name)) == meta.get("uid"):
                return
            if not resync_due(body.get("spec") or {}, parse_status(body.get("status")),
                              int(meta.get("generation") or 1), name, self.clock(),
                              self.settings, self.caches):
                return
            with self.metrics.reconcile_seconds.time():
                decision = self._reconcile(namespace, name)
            if decision is not None and not decision.actions \
                    and decision.status.phase in api.TERMINAL_PHASES:
                self._settled[(namespace, name)] = meta.get("uid")  # nothing left to do

    def _reconcile(self, namespace: str, name: str) -> Decision | None:
        body = self.cluster.current_finetunejob(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        uid = body["metadata"].get("uid")
        # Popped: a failure from here on leaves the job marked incomplete.
        last_complete = self._complete.pop((namespace, name), None) == uid
        observed = self.cluster.observe(body, last_complete=last_complete)
        observed = dataclasses.replace(observed, calibration=self.calibration_table())
        try:
            decision = decide(observed, self.clock(), self.settings, caches=self.caches)
        except Exception as err:  # one job's failure is its own, not the operator's
            log.exception("deciding about FineTuneJob %s/%s failed; it is marked Failed "
                          "(InternalError)", namespace, name)
            decision = internal_error(observed, self.clock(), self.settings, err)
        try:
            decision = self._act(namespace, observed, decision)
        except NamespaceGone:
            # Deleting a namespace deletes its jobs a moment later; a resync queued before
            # that meets the namespace gone. No failure: the job goes with it.
            log.info("namespace %s is gone or being deleted: FineTuneJob %s goes with it, "
                     "nothing created", namespace, name)
            return None
        events = [a for a in decision.actions if isinstance(a, Emit)]
        self.cluster.write_status(namespace, name, body.get("status"), decision.status)
        self._complete[(namespace, name)] = uid
        self.metrics.observe_phase(namespace, name, decision.status.phase)
        restarted = decision.status.restarts - observed.status.restarts
        if restarted > 0:
            self.metrics.restarts.labels(namespace, name).inc(restarted)
        # Events only once the state they announce is recorded.
        for event in events:
            self.cluster.post_event(body, event, self.clock())
        return decision

    def _act(self, namespace: str, observed: Observed, decision: Decision) -> Decision:
        """Apply the decision's actions (Events are posted later). A child the API server
        refuses for good ends the job: the decision is replaced by child_rejected's, whose
        deletes take back the children created before. Anything else raises (retried)."""
        created: list[Create] = []
        for action in decision.actions:
            if isinstance(action, Emit):
                continue
            if isinstance(action, RecordMemory):
                self._record_memory(namespace, observed, decision, action)
                continue
            try:
                self.cluster.apply(namespace, action)
            except ApiException as err:
                if isinstance(action, Create) and retry.is_namespace_gone(err):
                    raise NamespaceGone(namespace) from err
                if not isinstance(action, Create) or not retry.is_rejection(err):
                    raise
                return self._rejected(namespace, observed, decision, action, err, created)
            if isinstance(action, Create):
                created.append(action)
        return decision

    def calibration_table(self) -> Table | None:
        """The table plans are made with (the admission webhook's too); None: off."""
        return self.calibration.table() if self.calibration is not None else None

    def _record_memory(self, namespace: str, observed: Observed, decision: Decision,
                       action: RecordMemory) -> None:
        """Record a finished job's reading. Calibration is a courtesy to later jobs: a
        failure is logged and the reading left unmarked (a later reconcile tries again),
        never raised, which would keep this job's own status from being written."""
        name = observed.owner.name
        try:
            if self.calibration is None:
                raise CalibrationConflict("calibration is off in this process")
            self.calibration.record(action.key, action.run)
        except (ApiException, urllib3.exceptions.HTTPError, CalibrationConflict) as err:
            log.warning("%s/%s: could not record its measured memory for calibration (%s); "
                        "a later reconcile of the job tries again", namespace, name,
                        retry.server_message(err) if isinstance(err, ApiException)
                        else str(err)[:300])
        except Exception:  # a bug: its traceback, and the job's status is written all the same
            log.exception("%s/%s: recording its measured memory for calibration failed",
                          namespace, name)
        else:
            return
        if decision.status.memory is not None:
            decision.status.memory = decision.status.memory.model_copy(update={"recorded": None})

    def _rejected(self, namespace: str, observed: Observed, decision: Decision,
                  refused: Create, err: ApiException, created: list[Create]) -> Decision:
        reason = retry.server_message(err)
        log.warning("%s/%s: the API server refused %s %s (%s): %s; the job is Failed",
                    namespace, observed.owner.name, refused.obj["kind"],
                    refused.obj["metadata"]["name"], err.status, reason[:300])
        failed = child_rejected(observed, decision, self.clock(), self.settings, refused,
                                reason, created)
        for action in failed.actions:
            if not isinstance(action, Emit):
                self.cluster.apply(namespace, action)
        return failed

    def forget(self, namespace: str, name: str) -> None:
        """A deleted job. Waits for a reconcile still in flight: it would track the job's
        phase again after its metrics were dropped."""
        with self.locks(namespace, name):
            self.metrics.forget(namespace, name)
        self.locks.forget(namespace, name)
        self.cluster.forget(namespace, name)
        self._settled.pop((namespace, name), None)
        self._complete.pop((namespace, name), None)

