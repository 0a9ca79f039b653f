"""A job that Succeeded records its measured memory for the calibration table, once
(lifecycle/calibrate.py), and later jobs are planned with the table; a re-plan whose table
changed between two of its steps moves once."""

from __future__ import annotations

from datetime import timedelta

from finetune_contract.api import MemoryCheck
from finetune_operator import calibration as cal
from finetune_operator.lifecycle.actions import RecordMemory
from finetune_operator.settings import CalibrationSettings, Settings

from tests.finetune_operator.lifecycle.test_machine import created, kinds
from tests.finetune_operator.lifecycle.test_replan import ONE_NODE
from tests.support.ftj_samples import OWNER
from tests.support.world import World, two_node_spec

CALIBRATING = Settings(unschedulable_after=300, calibration=CalibrationSettings("ops"))
KEY = cal.Key("llama", "ddp", "cpu")


def calibrating_world(table: cal.Table = cal.EMPTY, **spec) -> World:
    world = World(two_node_spec(**spec), settings=CALIBRATING)
    world.calibration = table
    return world


def run_with_reading(world: World, measured_over_estimate: float = 1.2,
                     unread: int = 0) -> None:
    """Plan the job and run its gang; its ranks peaked at `measured_over_estimate` times the
    planner's own estimate, all but `unread` of them read (what the progress timer writes)."""
    world.step()
    world.start_pods()
    world.now += timedelta(seconds=30)
    world.step()
    plan = world.status.plan
    estimate = plan.calibration.estimated_bytes if plan.calibration else \
        plan.memory_per_gpu.total
    measured = int(estimate * measured_over_estimate)
    world.status.memory = MemoryCheck(
        planned_bytes=plan.memory_per_gpu.total, measured_bytes=measured, largest_rank=1,
        ratio=round(measured / plan.memory_per_gpu.total, 3),
        ranks_read=plan.world_size - unread)


def run_to_success(world: World, measured_over_estimate: float = 1.2, unread: int = 0) -> None:
    run_with_reading(world, measured_over_estimate, unread)
    world.complete()


def recorded(decision) -> list[RecordMemory]:
    return kinds(decision, RecordMemory)


def test_a_succeeded_job_records_its_reading_once():
    world = calibrating_world()
    run_to_success(world)
    assert world.status.plan.calibration.runs == 0
    done = world.step()
    assert done.status.phase == "Succeeded" and done.status.memory.recorded
    (record,) = recorded(done)
    assert record.key == KEY
    assert record.run == cal.Run(uid=OWNER.uid, job="research/chat", ratio=1.2)
    assert world.calibration[KEY.name].runs == 1
    world.now += timedelta(seconds=60)
    assert recorded(world.step()) == []  # marked recorded: never again


def test_a_status_write_lost_after_recording_records_nothing_twice():
    world = calibrating_world()
    run_to_success(world)
    world.step(write_status=False)  # the ConfigMap was written, the status was not
    again = world.step()
    assert len(recorded(again)) == 1 and again.status.memory.recorded
    assert world.calibration[KEY.name].runs == 1  # the table knew the job's uid


def test_a_later_job_of_the_same_key_is_planned_with_the_recorded_run():
    first = calibrating_world()
    run_to_success(first, measured_over_estimate=1.3)
    first.step()
    later = calibrating_world(first.calibration)
    later.step()
    plan, own = later.status.plan, first.status.plan
    assert (plan.calibration.key, plan.calibration.runs, plan.calibration.factor) == (
        KEY.name, 1, 1.3)
    assert plan.calibration.estimated_bytes == own.calibration.estimated_bytes
    assert plan.memory_per_gpu.total > own.memory_per_gpu.total
    assert "memory calibrated x1.3 from 1 recent run(s)" in plan.reason


def test_nothing_is_recorded_with_calibration_off_a_partial_reading_or_a_failure():
    off = calibrating_world()
    off.settings = Settings(unschedulable_after=300)
    run_to_success(off)
    assert recorded(off.step()) == [] and not off.status.memory.recorded
    partial = calibrating_world()
    run_to_success(partial, unread=1)  # one of the four ranks did not answer
    assert recorded(partial.step()) == []
    failed = calibrating_world(runPolicy={"backoffLimit": 0})
    run_with_reading(failed)
    failed.fail_rank(0)
    decision = failed.step()
    assert decision.status.phase == "Failed" and recorded(decision) == []


def test_a_job_planned_without_calibration_is_not_recorded():
    world = calibrating_world()
    world.calibration = None  # the shell read no table: the plan has no calibration
    run_to_success(world)
    assert world.status.plan.calibration is None
    assert recorded(world.step()) == []


def test_a_move_whose_table_changed_between_its_steps_moves_once():
    world = calibrating_world()
    world.step()
    world.start_pods()
    world.now += timedelta(seconds=30)
    world.step()
    world.edit(resources=ONE_NODE)
    world.step()  # 1. the gang stops
    moved = world.step()  # 2. the old Job goes, the new plan is recorded
    assert moved.status.replans == 1 and moved.status.plan.calibration.runs == 0
    # another job of the key Succeeded meanwhile: the plan computed now differs in memory
    world.calibration = cal.record(world.calibration, KEY, cal.Run("u-other", "t/o", 1.4))
    started = world.step()  # 3. the next attempt starts, and no attempt is skipped
    assert created(started) == ["ConfigMap/chat-trainer", "Job/chat-r1"]
    assert (started.status.replans, started.status.active_job) == (1, "chat-r1")
    # the status holds the plan the new children were made from
    assert started.status.plan.calibration.factor == 1.4
