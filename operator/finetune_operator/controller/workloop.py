"""The operator's work loop: runs what the Schedule says is due, in a pool of threads.

The watch handlers (main.py) only record bodies and call `trigger`; this loop, a task on
kopf's event loop, hands the due reconciles, resyncs and progress reads to the threads (the
API client blocks) and books each outcome back into the Schedule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from finetune_operator.controller import retry
from finetune_operator.controller.progress import refresh_progress
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.controller.schedule import Key, Schedule, Work

log = logging.getLogger(__name__)

# Reconciles wait on the API server most of the time: a few threads keep it busy, and one
# hung request (10 s read timeout) holds up only its own job.
WORKERS = 8
# The loop wakes at least this often even with nothing due (a guard, not a poll).
MAX_SLEEP = 1.0
# How long stopping waits for the work in flight (every API call times out within 15 s).
STOP_WAIT = 20.0


class WorkLoop:
    def __init__(self, reconciler: Reconciler, schedule: Schedule,
                 clock: Callable[[], float] = time.monotonic, workers: int = WORKERS) -> None:
        self.reconciler = reconciler
        self.schedule = schedule
        self.clock = clock
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="finetune-reconcile")
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._busy = 0  # pieces of work started and not yet booked back
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ from the handlers

    def trigger(self, key: Key) -> None:
        self.schedule.trigger(key, self.clock())
        self._wakeup.set()

    def follow_progress(self, key: Key, running: bool) -> None:
        self.schedule.follow_progress(key, running, self.clock())
        self._wakeup.set()

    def forget(self, key: Key) -> None:
        self.schedule.forget(key)

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="finetune-work-loop")
        self._task.add_done_callback(_log_end)

    def alive(self) -> bool:
        """False once the loop has ended (stopped, or an error escaped it): the liveness
        probe (main.py) then fails and the kubelet restarts the operator, instead of a
        process that watches but never reconciles again."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=STOP_WAIT)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while True:
            # Only as much as the threads can start now: what stays in the Schedule keeps
            # its priority (a queue in the executor would not).
            for key, work in self.schedule.take(self.clock(), limit=self.workers - self._busy):
                self._busy += 1
                task = asyncio.create_task(self._do(key, work))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            # No await since take(): a trigger cannot slip in between and be slept through.
            self._wakeup.clear()
            # Every thread busy: the next wakeup is a piece of work ending.
            due = self.schedule.next_due(self.clock()) if self._busy < self.workers else None
            try:
                await asyncio.wait_for(self._wakeup.wait(),
                                       MAX_SLEEP if due is None else min(due, MAX_SLEEP))
            except TimeoutError:
                pass

    async def _do(self, key: Key, work: Work) -> None:
        loop = asyncio.get_running_loop()
        failed, retry_in = False, None
        try:
            await loop.run_in_executor(self._executor, self._work, key, work)
        except Exception as err:  # noqa: BLE001 (booked and logged; the loop goes on)
            failed = True
            delay = retry.retry_in(err, self.schedule.failures(key))
            _log_failure(key, work, err, delay)
            retry_in = None if work == "progress" else delay  # progress: the next read
        self.schedule.done(key, work, self.clock(), failed=failed, retry_in=retry_in)
        self._busy -= 1
        self._wakeup.set()

    def _work(self, key: Key, work: Work) -> None:
        namespace, name = key
        if work == "reconcile":
            self.reconciler.reconcile(namespace, name)
        elif work == "resync":
            self.reconciler.resync(namespace, name)
        else:
            refresh_progress(self.reconciler, namespace, name)


def _log_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("the work loop stopped; the liveness probe now fails",
                     exc_info=task.exception())


def _log_failure(key: Key, work: Work, err: Exception, delay: float | None) -> None:
    """A transient API error in one line; anything else with its traceback."""
    what = f"{work} of {key[0]}/{key[1]}"
    if delay is None:
        log.error("%s failed; tried again at the next resync", what, exc_info=err)
    elif work == "progress":
        log.warning("%s failed (%s); read again at the next interval", what, _short(err))
    else:
        log.warning("%s failed (%s); retrying in %.0f s", what, _short(err), delay)


def _short(err: Exception) -> str:
    status = getattr(err, "status", None)
    return f"the API answered {status} {getattr(err, 'reason', '')}".strip() if status \
        else f"the API request failed: {err}"
