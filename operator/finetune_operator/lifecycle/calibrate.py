"""A job that Succeeded: its ranks' measured peak memory goes into the operator's calibration
table (calibration.py), once.

The reading (status.memory) becomes a run of its key here; the shell adds it to the
ConfigMap (controller/calibration.py) before it writes the status that marks the reading
recorded. A crash in between computes the same run again, and the table, which keeps the
recent jobs' uids, takes it once; a reading marked recorded is never looked at again.
"""

from __future__ import annotations

from finetune_operator import calibration as cal
from finetune_operator.lifecycle.actions import RecordMemory
from finetune_operator.lifecycle.step import Step
from finetune_operator.memory_drift import MAX_RANKS_READ


def record_memory(step: Step) -> None:
    """Ask the shell to record the memory reading of a job that Succeeded, when calibration is
    on and the reading can calibrate (calibration.finished_run), and mark it recorded."""
    status = step.status
    if step.settings.calibration is None or status.phase != "Succeeded":
        return
    memory, plan = status.memory, status.plan
    if memory is None or memory.recorded or plan is None:
        return
    owner = step.observed.owner
    found = cal.finished_run(plan, memory, uid=owner.uid, job=f"{owner.namespace}/{owner.name}",
                             ranks_readable=min(plan.world_size, MAX_RANKS_READ))
    if found is None:
        return
    step.actions.append(RecordMemory(*found))
    status.memory = memory.model_copy(update={"recorded": True})
