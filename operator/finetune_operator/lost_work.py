"""The work a job lost to interruptions, worked out from rank 0's progress alone.

Each run of the trainer serves the step it resumed from (finetune_train_resumed_step) and
the step it is at. A new run shows itself by a different resumed-from step, or by a step
below the highest the last run reached. The steps between what the last run reached and
where the new one resumed were trained twice. This holds for every way a run ends: a failed
rank (the operator restarts the gang), a deleted or evicted pod, a suspension, a preemption.
"""

from __future__ import annotations

from datetime import datetime

from finetune_contract.api import LostWork, Progress, Resumption

RECENT_RESUMPTIONS = 10


def observe(lost: LostWork | None, progress: Progress,
            now: datetime) -> tuple[LostWork | None, Resumption | None]:
    """`lost` after one read of rank 0's progress, and the resumption that read revealed.

    A read that lacks the step or the resumed-from step (a run still starting, or a trainer
    too old to serve it) changes nothing."""
    step, resumed = progress.step, progress.resumed_from_step
    if step is None or resumed is None:
        return lost, None
    current = lost or LostWork()
    if not _new_run(current, step, resumed):
        highest = max(step, current.run_step or 0)
        return current.model_copy(update={"run_step": highest,
                                          "run_resumed_from_step": resumed}), None
    reached = current.run_step or 0
    event = Resumption(at=now, reached_step=reached, resumed_from_step=resumed,
                       steps_redone=max(0, reached - resumed))
    return current.model_copy(update={
        "steps_redone": current.steps_redone + event.steps_redone,
        "resumptions": current.resumptions + 1,
        "recent": [*current.recent, event][-RECENT_RESUMPTIONS:],
        "run_step": step,
        "run_resumed_from_step": resumed,
    }), event


def _new_run(current: LostWork, step: int, resumed: int) -> bool:
    if current.run_step is None:
        return False  # the job's first run: nothing came before it
    return resumed != current.run_resumed_from_step or step < current.run_step
