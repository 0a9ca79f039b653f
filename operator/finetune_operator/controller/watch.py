"""Which watch events are worth a reconcile: pure decisions on the bodies the watches deliver.

A controller reacts to changes, not to every event: most events of a FineTuneJob are our own
status writes, and the first event of a batch Job is the creation the last reconcile made.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any


def reconcile_wanted(previous: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    """A FineTuneJob event needs a reconcile when the job is new to this process (created,
    or listed when the operator starts), or when its spec changed (a new generation).
    Status-only events are the operator's own writes; the periodic resync covers the rest."""
    if previous is None:
        return True
    before, after = previous.get("metadata") or {}, body.get("metadata") or {}
    return (before.get("uid"), before.get("generation")) != (after.get("uid"),
                                                             after.get("generation"))


def is_running(body: Mapping[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") == "Running"


def _job_state(body: Mapping[str, Any]) -> tuple[Any, Any]:
    """What of a batch Job the lifecycle reacts to: its status (pods started, failed,
    completed) and whether it is suspended (Kueue admits a gang by unsuspending it)."""
    return body.get("status") or {}, (body.get("spec") or {}).get("suspend")


class JobStates:
    """The last state seen of every batch Job of ours, from the watch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[Any, Any]] = {}

    def changed(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Whether this event of a Job is news for its FineTuneJob. A deleted Job always
        is (it may have to be created again). A Job seen for the first time is news only
        with a status: one without is the Job a reconcile just created, and the operator's
        own start reconciles every FineTuneJob anyway."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        state = _job_state(body)
        with self._lock:
            if event_type == "DELETED":
                self._seen.pop(key, None)
                return True
            previous = self._seen.get(key)
            self._seen[key] = state
        if previous is None:
            return bool(state[0])
        return previous != state

    def __len__(self) -> int:
        return len(self._seen)
