"""The operator's calibration table, kept in its ConfigMap (names.CALIBRATION_CONFIG_MAP in the
operator's namespace): read for the plans, and recorded into when a job Succeeded.

Reading never fails a plan: an absent ConfigMap is an empty table, an unreadable one (the
API server down, no permission) is logged and read as empty, and a corrupt entry is logged,
naming its key, and left out (calibration.parse). The table is read at most once per
CACHE_SECONDS: every reconcile of every job asks for it, and it changes only when a job
finishes. Recording is a read-modify-write of the one entry, with the ConfigMap's
resourceVersion: a write that lost the race (409) reads again; the other entries, and
whatever else a person put into the ConfigMap, are written back as they were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import urllib3
from kubernetes.client.exceptions import ApiException

from finetune_operator import calibration as cal
from finetune_operator import names
from finetune_operator.settings import CalibrationSettings

log = logging.getLogger(__name__)

# Seconds a table read stays good. A run recorded by this operator is in it at once; an edit
# by hand shows within this time.
CACHE_SECONDS = 60.0
# Writes tried before giving up when each one lost the race against another writer.
ATTEMPTS = 5


class ConfigMaps(Protocol):
    """What the store needs of the API (controller/kube.py's Cluster)."""

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def store_config_map(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...


class CalibrationConflict(RuntimeError):
    """The ConfigMap changed under every write tried."""


class CalibrationStore:
    """The calibration table of one operator: one ConfigMap, one lock, one cached read."""

    def __init__(self, api: ConfigMaps, settings: CalibrationSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.namespace, self.name = settings.namespace, settings.config_map
        self.clock = clock
        self._lock = threading.Lock()
        self._table: cal.Table | None = None
        self._read_at = 0.0
        self._told: set[str] = set()  # problems logged already: each once per process

    def table(self) -> cal.Table:
        """The table to plan with (cached; empty when the ConfigMap cannot be read)."""
        with self._lock:
            if self._table is None or self.clock() - self._read_at >= CACHE_SECONDS:
                self._table = self._read()
                self._read_at = self.clock()
            return self._table

    def record(self, key: cal.Key, run: cal.Run) -> bool:
        """Add `run` under `key`; False when the job is among its recent runs already.
        Raises CalibrationConflict, or the API's error, when it could not be written."""
        with self._lock:
            for _ in range(ATTEMPTS):
                stored = self.api.read_config_map(self.namespace, self.name)
                data = dict((stored or {}).get("data") or {})
                entry = {key.name: data[key.name]} if key.name in data else {}
                before, problems = cal.parse(entry)
                self._tell(problems, "it starts afresh with this run")
                after = cal.record(before, key, run)
                if after is before:
                    self._remember(data)
                    return False
                data[key.name] = cal.dump_entry(after[key.name])
                try:
                    self.api.store_config_map(self.namespace, self._body(stored, data))
                except ApiException as err:
                    if err.status == 409:  # written or created since it was read
                        continue
                    raise
                self._remember(data)
                return True
        raise CalibrationConflict(f"ConfigMap {self.namespace}/{self.name} changed under each "
                                  f"of {ATTEMPTS} writes")

    # ------------------------------------------------------------------ plumbing

    def _read(self) -> cal.Table:
        try:
            stored = self.api.read_config_map(self.namespace, self.name)
        except (ApiException, urllib3.exceptions.HTTPError) as err:
            log.warning("cannot read the calibration ConfigMap %s/%s (%s): planning without "
                        "calibration for %.0f s", self.namespace, self.name,
                        getattr(err, "status", None) or type(err).__name__, CACHE_SECONDS)
            return cal.EMPTY
        data = (stored or {}).get("data")
        table, problems = cal.parse(data if isinstance(data, dict) else {})
        self._tell(problems, "plans of its key are made without it")
        return table

    def _remember(self, data: dict[str, Any]) -> None:
        self._table, _ = cal.parse(data)
        self._read_at = self.clock()

    def _tell(self, problems: list[str], consequence: str) -> None:
        for problem in problems:
            if problem not in self._told:
                self._told.add(problem)
                log.warning("calibration ConfigMap %s/%s: %s (%s)", self.namespace, self.name,
                            problem, consequence)

    def _body(self, stored: dict[str, Any] | None, data: dict[str, str]) -> dict[str, Any]:
        """The ConfigMap to write: the stored one's labels, annotations and binary data with
        the new data, and its resourceVersion (a replace); a new one otherwise."""
        meta = (stored or {}).get("metadata") or {}
        labels = {**(meta.get("labels") or {}), names.MANAGED_BY_LABEL: names.MANAGER}
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                    "labels": labels}
        for field in ("annotations", "resourceVersion"):
            if meta.get(field):
                metadata[field] = meta[field]
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                                "data": data}
        if (stored or {}).get("binaryData"):
            body["binaryData"] = stored["binaryData"]  # type: ignore[index]
        return body
