"""The failure reason found in a run's log and the end-of-run summary lines."""

from __future__ import annotations

from finetune_operator.local.report import failure_reason, log_tail, stop_report, summary_lines

from tests.conftest import ROOT

TORCHRUN_FAILURE = """\
loading data/train.jsonl
[default0]:finetune-trainer: error: data/train.jsonl:17: messages[1].role must be user or assistant
E1101 12:00:01.123000 4242 torch/distributed/elastic/multiprocessing/api.py:874] failed
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 8, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
finetune_trainer FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-01_12:00:01
  host      : laptop
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 4243)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def test_failure_reason_is_the_trainer_error_not_torchrun_boilerplate():
    assert failure_reason(TORCHRUN_FAILURE) == (
        "data/train.jsonl:17: messages[1].role must be user or assistant"
    )


def test_failure_reason_of_a_python_exception():
    log = "step 3\nTraceback (most recent call last):\n  File x\nRuntimeError: boom\n"
    assert failure_reason(log) == "RuntimeError: boom"


def test_failure_reason_none_when_nothing_looks_like_an_error():
    assert failure_reason("step 1\nstep 2\n") is None


def test_stop_report_is_rank_zero_word_on_its_emergency_checkpoint():
    log = ("{'loss': 5.1}\n[default0]:finetune-trainer: stopped: SIGINT: wrote the complete "
           "checkpoint checkpoint-23 at step 23; the next attempt resumes there\n"
           "W1203 torch/distributed/elastic: Received Signals.SIGINT death signal\n")
    assert stop_report(log) == ("SIGINT: wrote the complete checkpoint checkpoint-23 at step "
                                "23; the next attempt resumes there")


def test_stop_report_none_when_the_ranks_said_nothing():
    assert stop_report("step 1\nKeyboardInterrupt\n") is None


def test_log_tail_keeps_the_last_non_empty_lines():
    assert log_tail("a\n\nb\nc\n\n", lines=2) == ["b", "c"]


def test_summary_lines_name_losses_time_and_model():
    summary = {"firstLoss": 6.0, "lastLoss": 1.5, "evalLoss": 1.7, "steps": 90,
               "totalSteps": 90, "tokens": 250_000, "tokensPerSecond": 25000.0,
               "data": {"skippedTotal": 0}, "resumedFrom": None,
               "finalModel": "/runs/x/final"}
    text = "\n".join(summary_lines(summary, wall_seconds=83))
    assert "6.0000 -> 1.5000 (-75%)" in text
    assert "eval loss:  1.7000" in text
    assert "steps:      90/90, 250K tokens" in text
    assert "25.0k tokens/s" in text
    assert "wall time:  1:23" in text
    assert "resumed" not in text and "skipped" not in text
    assert text.endswith("model:      /runs/x/final")


def test_summary_lines_of_a_resumed_run_with_skipped_rows():
    summary = {"steps": 40, "totalSteps": 100, "earlyStopped": True,
               "resumedFrom": "/runs/x/checkpoint-20", "data": {"skippedTotal": 3}}
    text = "\n".join(summary_lines(summary, wall_seconds=5))
    assert "steps:      40/100 (stopped early)" in text
    assert "(resumed from /runs/x/checkpoint-20)" in text
    assert "skipped:    3 bad rows" in text
    assert "loss" not in text  # no curve, no loss line


def test_plan_lines_of_the_tiny_example_planned_for_two_cpu_ranks():

    import yaml
    from finetune_contract.api import FineTuneJob
    from finetune_operator.local import datastats
    from finetune_operator.local.report import plan_lines
    from finetune_operator.planner import plan_job

    examples = ROOT / "examples"
    job = FineTuneJob.model_validate(yaml.safe_load((examples / "tiny-chat.yaml").read_text()))
    stats = datastats.measure(job.spec.dataset, examples)
    lines = plan_lines(plan_job(job.spec, data_root=examples, dataset_stats=stats), "cpu")
    assert lines[0].startswith("plan: 2 x cpu ranks, ddp, fp32, ")
    assert "x 2 ranks x" in lines[1] and "= 32 sequences/step" in lines[1]
    assert "per rank, ~" in lines[2] and "training tokens" in lines[2]
    assert lines[3].startswith("      why: ")


def test_summary_lines_say_where_rank_0s_time_went():
    summary = {"steps": 10, "time": {"wallSeconds": 100.0, "startupSeconds": 30.0,
                                     "stepsSeconds": 60.0, "evalSeconds": 4.0,
                                     "checkpointSeconds": 2.0, "goodput": 0.6}}
    (line,) = [x for x in summary_lines(summary, wall_seconds=110) if x.startswith("goodput")]
    assert line == ("goodput:    60% of rank 0's 1:40 in optimizer steps (0:30 startup, "
                    "0:04 eval, 0:02 checkpoint)")
