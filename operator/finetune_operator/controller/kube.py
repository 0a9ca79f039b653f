"""The operator's only door to the API server: read one FineTuneJob with its children, apply
the lifecycle's actions, write the status. Children are found by their deterministic names.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import kubernetes
import urllib3
from finetune_contract import api
from finetune_contract.api import FineTuneJobStatus
from kubernetes.client.exceptions import ApiException

from finetune_operator import names
from finetune_operator.controller.observe import observation
from finetune_operator.lifecycle.actions import Create, Delete, Emit, SetSuspend
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.lifecycle.step import attempt_number
from finetune_operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)

# How children are deleted: the Job's pods with it (the API default for Jobs orphans them).
PROPAGATION = "Background"
# status fields the progress timer writes (controller/progress.py); the lifecycle leaves them.
PROGRESS_TIMER_FIELDS = ("progress", "lostWork", "goodput")
# The source of the operator's Events.
COMPONENT = "finetune-operator"


def load_client_config() -> None:
    """In-cluster service account, else the current kubeconfig context."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # KUBECONFIG as it is now (the client reads its default once, at import)
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)


# (connect, read) seconds for every API call: a request the API server never answers must
# not hold a job's reconcile, and its lock, forever. kopf retries the failed reconcile.
REQUEST_TIMEOUT = (5, 10)


def _with_timeout(call_api: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        return call_api(*args, **kwargs)
    return call


class Cluster:
    """Typed API calls on plain dicts. 404 on read means absent; 409 on create and 404 on
    delete mean the work is already done (so every action is idempotent)."""

    def __init__(self, metrics: OperatorMetrics | None = None,
                 client: kubernetes.client.ApiClient | None = None) -> None:
        self.client = client or kubernetes.client.ApiClient()
        self.client.call_api = _with_timeout(self.client.call_api)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.batch = kubernetes.client.BatchV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.metrics = metrics
        # FineTuneJobs as the watch last delivered them, and the newest status known to be
        # stored (written by us, or read by a GET): see current_finetunejob.
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}
        self._stored: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._memory = threading.Lock()

    # ------------------------------------------------------------------ reading

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The FineTuneJob as the API server has it now (one GET)."""
        body = self._read(lambda: self._raw(self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, _preload_content=False)))
        if body is not None:
            self._record_status(namespace, name, body)
        return body

    def remember(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """A FineTuneJob as a watch event delivered it; returns the body it replaces."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        with self._memory:
            previous = self._seen.get(key)
            self._seen[key] = dict(body)
        return previous

    def forget(self, namespace: str, name: str) -> None:
        with self._memory:
            self._seen.pop((namespace, name), None)
            self._stored.pop((namespace, name), None)

    def current_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The FineTuneJob to reconcile: the body the watch last delivered when its status is
        the newest one this process knows is stored, else a GET.

        The lifecycle keeps its memory in the status, so a body whose status predates our
        own last write (its watch event is still on the way) must not be used: it would redo
        what the last reconcile did, or stamp times again. Spec edits are safe either way:
        an edit is itself an event, and triggers another reconcile with the edited body."""
        with self._memory:
            seen = self._seen.get((namespace, name))
            stored = self._stored.get((namespace, name))
        if seen is not None:
            meta = seen.get("metadata") or {}
            if stored is None or stored == (meta.get("uid"), seen.get("status") or {}):
                return seen
        return self.get_finetunejob(namespace, name)

    def _record_status(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        uid = (body.get("metadata") or {}).get("uid")
        with self._memory:
            self._stored[(namespace, name)] = (uid, body.get("status") or {})

    def observe(self, body: dict[str, Any], *, last_complete: bool = False) -> Observed:
        """The job and its children, read by their deterministic names.

        A job that never started (no plan in its status) has no children unless a crash
        came between creating them and recording the plan; the ConfigMap, created first,
        tells. Without it the Service and Jobs are not read: creating them again is
        idempotent (409). `last_complete`: see attempts_to_read."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        status = parse_status(body.get("status"))
        config_map = self._read(lambda: self._raw(self.core.read_namespaced_config_map(
            names.config_map_name(name), namespace, _preload_content=False)))
        started = status.plan is not None and status.plan.fits
        if config_map is None and not started:
            return observation(body, status, sizing_pod=self._sizing_pod(namespace, name,
                                                                         status))
        jobs = {}
        for attempt in attempts_to_read(attempt_number(status), last_complete):
            job = self.get_job(namespace, names.batch_job_name(name, attempt))
            if job is not None:
                jobs[attempt] = job
        service = self._read(lambda: self._raw(self.core.read_namespaced_service(
            names.service_name(name), namespace, _preload_content=False)))
        return observation(body, status, config_map=config_map, service=service, jobs=jobs,
                           pods=self.list_pods(namespace, name) if jobs else [])

    def _sizing_pod(self, namespace: str, name: str, status: FineTuneJobStatus
                    ) -> dict[str, Any] | None:
        """The sizing pod, read only while the lifecycle waits for it (Sized=Unknown)."""
        sized = next((c for c in status.conditions if c.type == "Sized"), None)
        if sized is None or sized.status != "Unknown":
            return None
        return self._read(lambda: self._raw(self.core.read_namespaced_pod(
            names.sizing_pod_name(name), namespace, _preload_content=False)))

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(lambda: self._raw(self.batch.read_namespaced_job(
            name, namespace, _preload_content=False)))

    def list_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """Pods of every attempt of `job` (the Job controller names them; we filter by label,
        and again client-side, since a selector is only a hint to some API servers)."""
        selector = f"{names.JOB_LABEL}={job}"
        result = self._call(lambda: self._raw(self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False)))
        pods = result.get("items") or []
        return [p for p in pods if (p["metadata"].get("labels") or {}).get(names.JOB_LABEL)
                == job]

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap by name (None when absent): the calibration table's."""
        return self._read(lambda: self._raw(self.core.read_namespaced_config_map(
            name, namespace, _preload_content=False)))

    # ------------------------------------------------------------------ writing

    def store_config_map(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create `body`, or replace the ConfigMap it was read from when it carries that
        one's resourceVersion. Raises the API server's 409 when it exists already, or
        changed since it was read: the caller reads it again."""
        name = body["metadata"]["name"]
        if body["metadata"].get("resourceVersion"):
            return self._call(lambda: self._raw(self.core.replace_namespaced_config_map(
                name, namespace, body, _preload_content=False)))
        return self._call(lambda: self._raw(self.core.create_namespaced_config_map(
            namespace, body, _preload_content=False)))

    def apply(self, namespace: str, action: Create | Delete | SetSuspend) -> None:
        if isinstance(action, Create):
            self._create(namespace, action.obj)
        elif isinstance(action, Delete):
            self._delete(namespace, action.kind, action.name)
        else:
            self._call(lambda: self.batch.patch_namespaced_job(
                action.job, namespace, {"spec": {"suspend": action.suspend}}), missing_ok=True)

    def write_status(self, namespace: str, name: str, old: dict[str, Any] | None,
                     new: FineTuneJobStatus, *,
                     keep: tuple[str, ...] = PROGRESS_TIMER_FIELDS) -> None:
        """Merge-patch the status subresource with what changed; fields in `keep` belong to
        another writer (by default, the progress timer's) and are left alone."""
        patch = status_patch(old, new, keep=keep)
        if not patch:
            return
        try:
            stored = self._call(lambda: self._raw(
                self.custom.patch_namespaced_custom_object_status(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": patch},
                    _preload_content=False)), missing_ok=True)
        except Exception:
            # The write may or may not have landed: only a GET can tell again.
            with self._memory:
                self._stored[(namespace, name)] = ("", {"unknown": True})
            raise
        if stored is None:  # deleted meanwhile: its DELETED event forgets it
            log.info("FineTuneJob %s/%s was deleted while its status was written", namespace,
                     name)
            with self._memory:
                self._stored.pop((namespace, name), None)
        elif isinstance(stored, dict) and isinstance(stored.get("metadata"), dict):
            self._record_status(namespace, name, stored)
        else:  # an answer without the object: the next reconcile reads it
            with self._memory:
                self._stored[(namespace, name)] = ("", {"unknown": True})

    def post_event(self, body: dict[str, Any], emit: Emit, now: datetime) -> None:
        """Post the core/v1 Event `emit` on the FineTuneJob `body`. A failure is logged and
        counted, never raised: the status it announces is written already, and an Event is a
        courtesy."""
        event = event_object(body, emit, now)
        namespace = event["metadata"]["namespace"]
        try:
            self._call(lambda: self.core.create_namespaced_event(namespace, event,
                                                                 _preload_content=False))
        except (ApiException, urllib3.exceptions.HTTPError) as err:
            log.warning("could not post Event %s on %s/%s: %s", event.get("reason"), namespace,
                        event["involvedObject"]["name"], err)

    def _create(self, namespace: str, obj: dict[str, Any]) -> None:
        creators = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Job": self.batch.create_namespaced_job,
            "Pod": self.core.create_namespaced_pod,
        }
        create = creators[obj["kind"]]
        try:
            self._call(lambda: create(namespace, obj))
        except ApiException as err:
            if err.status != 409:
                raise
            log.debug("%s %s exists already", obj["kind"], obj["metadata"]["name"])

    def _delete(self, namespace: str, kind: str, name: str) -> None:
        body = kubernetes.client.V1DeleteOptions(propagation_policy=PROPAGATION)
        deleters = {
            "ConfigMap": self.core.delete_namespaced_config_map,
            "Service": self.core.delete_namespaced_service,
            "Job": self.batch.delete_namespaced_job,
            "Pod": self.core.delete_namespaced_pod,
        }
        delete = deleters[kind]
        self._call(lambda: delete(name, namespace, body=body), missing_ok=True)

    # ------------------------------------------------------------------ plumbing

    def _read(self, call: Any) -> Any:
        return self._call(call, missing_ok=True)

    def _call(self, call: Any, *, missing_ok: bool = False) -> Any:
        try:
            return call()
        except ApiException as err:
            if missing_ok and err.status == 404:
                return None
            if err.status != 409 and self.metrics is not None:
                self.metrics.api_errors.inc()
            raise
        except urllib3.exceptions.HTTPError:  # timed out, connection reset, ...
            if self.metrics is not None:
                self.metrics.api_errors.inc()
            raise

    @staticmethod
    def _raw(response: Any) -> dict[str, Any]:
        """The JSON body as sent: typed models would drop fields and reject partial objects."""
        return json.loads(response.data)


def event_object(body: dict[str, Any], emit: Emit, now: datetime) -> dict[str, Any]:
    """The core/v1 Event announcing `emit` on the FineTuneJob `body` (what
    `kubectl describe ftj` lists)."""
    meta = body["metadata"]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": api.API_VERSION, "kind": api.KIND,
                           "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta["uid"]},
        "type": emit.type, "reason": emit.reason, "message": emit.message[:1024],
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


def attempts_to_read(restarts: int, last_complete: bool) -> list[int]:
    """The attempts whose batch Jobs a reconcile reads. A restart creates the next attempt's
    Job before it deletes the failed one and records the restart, so after a crash or a
    failed request in between either may be left: read the previous, current and next. When
    this process's last reconcile of the job ran to its end (status written), every Job it
    made is recorded and every older one deleted, and nothing else creates them: only the
    current attempt can exist."""
    if last_complete:
        return [restarts]
    return [a for a in (restarts - 1, restarts, restarts + 1) if a >= 0]


def parse_status(raw: dict[str, Any] | None) -> FineTuneJobStatus:
    """The stored status; fields this version does not know are ignored."""
    return FineTuneJobStatus.model_validate(raw or {})


def status_patch(old: dict[str, Any] | None, new: FineTuneJobStatus,
                 keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON merge patch from the stored status `old` to `new` (None removes a field),
    skipping `keep`. Compared with what is stored, so defaults get written too."""
    before = old or {}
    after = new.to_wire()
    patch: dict[str, Any] = {}
    for key in set(before) | set(after):
        if key in keep:
            continue
        if key not in after:
            patch[key] = None
        elif before.get(key) != after[key]:
            patch[key] = after[key]
    return patch
