"""The operator's memo of parsed specs: bounded, shared by the work loop's threads.

Every reconcile needs the spec a job started with (the YAML in its ConfigMap) and the validated
current spec; parsing them is most of a reconcile's CPU, and they rarely change. The
controller owns one `ParseCache` of each and passes them to the lifecycle (lifecycle/spec.py:
SpecCaches).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from finetune_operator.lifecycle.spec import SpecCaches

T = TypeVar("T")

# One entry per live job is enough (its started spec, its current spec); a few thousand
# parsed specs are a few MiB.
ENTRIES = 4096


class ParseCache(Generic[T]):
    """A bounded memo of a pure parse, keyed by the exact text (or canonical JSON) parsed.

    Keyed by content, not by resourceVersion: equal text parses to an equal result whatever
    the metadata says. The values are shared, so callers must not mutate them (the lifecycle
    only reads specs, and copies with `model_copy`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, parse: Callable[[str], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = parse(key)  # outside the lock: another job's parse need not wait
        self.seed(key, value)
        return value

    def seed(self, key: str, value: T) -> None:
        """Remember what `key` parses to without parsing it (the caller made the text)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


def spec_caches(size: int = ENTRIES) -> SpecCaches:
    """Fresh memos for one operator process (one Reconciler)."""
    return SpecCaches(started=ParseCache(size), current=ParseCache(size))
