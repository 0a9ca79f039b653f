"""When each FineTuneJob's work is due: pure bookkeeping, no I/O, the time passed in.

The operator reacts to watch events and to the clock. kopf's on.create/on.update/on.resume
and its timers did this before, at the price of two patches of every FineTuneJob (a
finalizer, which kopf adds for timers, and a last-handled-configuration annotation), one more
watch event each, and a finalizer to remove by hand when the operator was uninstalled first.
This is the work queue of a controller instead:

- an event asks for a reconcile (`trigger`); triggers while a job's work runs or waits are
  merged into one reconcile after it, so a burst of events costs one reconcile;
- every job is resynced `resync_interval` after its last reconcile (pods are not watched;
  deadlines and Unschedulable are timed), a failed one retried after the delay given;
- a Running job's rank 0 metrics are read every `progress_interval`;
- at most one piece of work per job runs at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Key = tuple[str, str]  # (namespace, name)
Work = Literal["reconcile", "resync", "progress"]


@dataclass
class _Entry:
    reconcile_at: float | None  # an event or a retry asked for a reconcile
    resync_at: float
    progress_at: float | None = None  # None: not Running, no progress to read
    busy: bool = False
    failures: int = 0  # consecutive failed reconciles (the retry's backoff exponent)


class Schedule:
    def __init__(self, resync_interval: float, progress_interval: float) -> None:
        self.resync_interval = resync_interval
        self.progress_interval = progress_interval
        self._entries: dict[Key, _Entry] = {}

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def trigger(self, key: Key, now: float) -> None:
        """Reconcile `key` as soon as nothing else of it runs (a new job is tracked)."""
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = _Entry(reconcile_at=now, resync_at=now + self.resync_interval)
        else:
            entry.reconcile_at = now if entry.reconcile_at is None else min(entry.reconcile_at,
                                                                              now)

    def follow_progress(self, key: Key, running: bool, now: float) -> None:
        """Read progress while the job is Running: the first read at once, then periodically."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if not running:
            entry.progress_at = None
        elif entry.progress_at is None:
            entry.progress_at = now

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)

    def take(self, now: float, limit: int | None = None) -> list[tuple[Key, Work]]:
        """The work due at `now`, one piece per job that is not busy, at most `limit` pieces
        (the free workers); those jobs become busy. Reconciles come first, then resyncs,
        then progress reads, each oldest first: under load the periodic work waits, not
        the reaction to a new job or a change."""
        due: list[tuple[int, float, Key, Work]] = []
        for key, entry in self._entries.items():
            if not entry.busy:
                work = _due_work(entry, now)
                if work is not None:
                    due.append((_PRIORITY[work], _due_at(entry, work), key, work))
        due.sort(key=lambda item: item[:2])
        taken = [(key, work) for _, _, key, work in due[:limit]]
        for key, work in taken:
            entry = self._entries[key]
            entry.busy = True
            if work == "reconcile":
                entry.reconcile_at = None
        return taken

    def done(self, key: Key, work: Work, now: float, *, retry_in: float | None = None,
             failed: bool = False) -> None:
        """`work` of `key` ended at `now`. A failure is retried after `retry_in` seconds when
        given (a transient API error), else at the next resync."""
        entry = self._entries.get(key)
        if entry is None:  # forgotten (deleted) meanwhile
            return
        entry.busy = False
        if work == "progress":
            if entry.progress_at is not None:
                entry.progress_at = now + self.progress_interval
            return
        entry.resync_at = now + self.resync_interval
        if not failed:
            entry.failures = 0
            return
        entry.failures += 1
        if retry_in is not None:
            retry_at = now + retry_in
            entry.reconcile_at = retry_at if entry.reconcile_at is None else min(
                entry.reconcile_at, retry_at)

    def failures(self, key: Key) -> int:
        """Consecutive failed reconciles of `key` so far (0 after a success)."""
        entry = self._entries.get(key)
        return entry.failures if entry else 0

    def next_due(self, now: float) -> float | None:
        """Seconds until the earliest work of a job that is not busy (0 when overdue), or
        None when nothing is scheduled."""
        times = [t for entry in self._entries.values() if not entry.busy
                 for t in (entry.reconcile_at, entry.resync_at, entry.progress_at)
                 if t is not None]
        return max(0.0, min(times) - now) if times else None


_PRIORITY: dict[Work, int] = {"reconcile": 0, "resync": 1, "progress": 2}


def _due_at(entry: _Entry, work: Work) -> float:
    at = {"reconcile": entry.reconcile_at, "resync": entry.resync_at,
          "progress": entry.progress_at}[work]
    assert at is not None  # _due_work chose it
    return at


def _due_work(entry: _Entry, now: float) -> Work | None:
    """A reconcile first (it also counts as the resync), then the resync, then progress."""
    if entry.reconcile_at is not None and entry.reconcile_at <= now:
        return "reconcile"
    if entry.resync_at <= now:
        return "resync"
    if entry.progress_at is not None and entry.progress_at <= now:
        return "progress"
    return None
