"""Goodput: how much of a job's time trained, worked out from rank 0's progress alone.

Each trainer run serves where its time went so far (finetune_train_run_seconds and the
startup, step, evaluation and checkpoint seconds: trainer callbacks.TimeAccounting). A read
that shows a new run (lost_work.observe's Resumption) closes the previous one at what was
last read of it. Then, since the pods first ran (status.startTime):

- productive: seconds inside optimizer steps, less the steps a later run trained again
  (those cost the mean step time of the run that lost them);
- lost, by cause: start-up, checkpoints, evaluation, redone steps; restarts: the wall time
  no trainer ran (rescheduling, image pulls, the gang meeting again, and what an
  interruption took after the last read); other: the rest (logging, data waits);
- the speed: tokens/s per rank, and MFU as 6 x parameters x tokens/s over the ranks' dense
  peak in the GPU catalog;
- the GPU-hours the runs held (their seconds times their ranks), and their cost from the
  catalog's price range.

Pure: the last goodput, one read and the plan in, the new goodput out.
"""

from __future__ import annotations

from datetime import datetime

from finetune_contract.api import (
    CostRange,
    Goodput,
    LostTime,
    Plan,
    Progress,
    Resumption,
    RunSeconds,
)

from finetune_operator.planner.gpus import CATALOG

HOUR = 3600.0


def observe(previous: Goodput | None, progress: Progress, new_run: Resumption | None,
            plan: Plan | None, started: datetime | None, now: datetime) -> Goodput | None:
    """The goodput after one read of rank 0. None until the job has run and a trainer that
    accounts for its time has been read."""
    if plan is None or started is None or progress.run_seconds is None:
        return previous
    last = previous or Goodput()
    finished, redone = last.finished_runs, last.lost_seconds.redone_steps
    if new_run is not None and previous is not None:
        finished = _add(finished, last.current_run)
        redone += new_run.steps_redone * _mean_step(last.current_run)
    current = _run(progress, plan)
    runs = _add(finished, current)
    wall = max((now - started).total_seconds(), runs.wall)
    productive = max(0.0, runs.steps - redone)
    restarts = max(0.0, wall - runs.wall)
    accounted = productive + redone + runs.startup + runs.eval + runs.checkpoint + restarts
    gpu_hours = runs.gpu_seconds / HOUR
    return Goodput(
        ratio=round(productive / wall, 4) if wall > 0 else None,
        wall_seconds=round(wall, 1),
        productive_seconds=round(productive, 1),
        lost_seconds=LostTime(startup=round(runs.startup, 1),
                              checkpoints=round(runs.checkpoint, 1),
                              evaluation=round(runs.eval, 1), redone_steps=round(redone, 1),
                              restarts=round(restarts, 1),
                              other=round(max(0.0, wall - accounted), 1)),
        tokens_per_second_per_gpu=_per_rank(progress, plan),
        mfu=_mfu(progress, plan),
        gpu_hours=round(gpu_hours, 4),
        cost_usd=_cost(plan, gpu_hours),
        finished_runs=finished,
        current_run=current,
    )


def _run(progress: Progress, plan: Plan) -> RunSeconds:
    wall = progress.run_seconds or 0.0
    done = (progress.step or 0) - (progress.resumed_from_step or 0)
    return RunSeconds(wall=wall, startup=progress.startup_seconds or 0.0,
                      steps=progress.step_seconds or 0.0, eval=progress.eval_seconds or 0.0,
                      checkpoint=progress.checkpoint_seconds or 0.0, steps_done=max(0, done),
                      gpu_seconds=wall * plan.world_size)


def _add(a: RunSeconds, b: RunSeconds) -> RunSeconds:
    return RunSeconds(**{name: getattr(a, name) + getattr(b, name)
                         for name in RunSeconds.model_fields})


def _mean_step(run: RunSeconds) -> float:
    return run.steps / run.steps_done if run.steps_done else 0.0


def _per_rank(progress: Progress, plan: Plan) -> float | None:
    if progress.tokens_per_second is None or not plan.world_size:
        return None
    return round(progress.tokens_per_second / plan.world_size, 1)


def _mfu(progress: Progress, plan: Plan) -> float | None:
    gpu = CATALOG.get(plan.gpu)
    if progress.tokens_per_second is None or gpu is None or not plan.world_size:
        return None
    peak = gpu.tflops(plan.precision) * 1e12 * plan.world_size
    return round(6 * plan.parameters * progress.tokens_per_second / peak, 4) if peak else None


def _cost(plan: Plan, gpu_hours: float) -> CostRange | None:
    gpu = CATALOG.get(plan.gpu)
    if gpu is None:
        return None
    return CostRange(low=round(gpu_hours * gpu.price_low, 2),
                     high=round(gpu_hours * gpu.price_high, 2))
