"""The work loop's liveness: a loop that ended must fail the operator's liveness probe, or the
pod would keep watching while reconciling nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from finetune_operator.controller.schedule import Schedule
from finetune_operator.controller.workloop import WorkLoop


class BrokenSchedule(Schedule):
    def take(self, now, limit=None):
        raise KeyError("a bug in the schedule")


def _probe(loop: WorkLoop) -> bool:
    from finetune_operator import main  # kopf registrations: imported only here

    return main.work_loop_alive(memo=SimpleNamespace(work=loop))


async def _started(schedule: Schedule) -> WorkLoop:
    loop = WorkLoop(reconciler=None, schedule=schedule, workers=1)
    loop.start()
    for _ in range(10):
        await asyncio.sleep(0)  # let the loop take its first turn
    return loop


def test_a_running_loop_passes_the_probe_and_a_stopped_one_fails_it():
    async def scenario():
        loop = await _started(Schedule(resync_interval=10.0, progress_interval=15.0))
        assert loop.alive() and _probe(loop) is True
        await loop.stop()
        assert not loop.alive()
        with pytest.raises(RuntimeError, match="work loop has stopped"):
            _probe(loop)

    asyncio.run(scenario())


def test_an_error_that_escapes_the_loop_fails_the_probe_and_is_logged(caplog):
    async def scenario():
        loop = await _started(BrokenSchedule(resync_interval=10.0, progress_interval=15.0))
        assert not loop.alive()
        with pytest.raises(RuntimeError):
            _probe(loop)
        await loop.stop()

    asyncio.run(scenario())
    assert "the work loop stopped" in caplog.text and "a bug in the schedule" in caplog.text
