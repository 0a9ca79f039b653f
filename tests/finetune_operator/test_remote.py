"""The pure parts of `finetune run` against a cluster: the live line and the exit code."""

from __future__ import annotations

import argparse
import io

import pytest
from finetune_contract.api import FineTuneJobStatus, Progress
from finetune_operator.errors import UserError
from finetune_operator.remote import follow, follow_line, outcome, run_remote

from tests.support.ftj_samples import VALID


def test_outcome_ends_only_in_a_terminal_phase():
    assert outcome(FineTuneJobStatus(phase="Succeeded")) == 0
    assert outcome(FineTuneJobStatus(phase="Failed")) == 1
    for phase in ("Pending", "Running", "Restarting", "Suspended"):
        assert outcome(FineTuneJobStatus(phase=phase)) is None


def test_follow_line_shows_progress_while_running_and_the_message_otherwise():
    running = FineTuneJobStatus(phase="Running", progress=Progress(
        step=30, total_steps=120, loss=2.5, tokens_per_second=1800.0))
    line = follow_line(running)
    assert "loss 2.5000" in line and "25%" in line
    stale = running.model_copy(update={"progress": running.progress.model_copy(
        update={"stale": True})})
    assert follow_line(stale).endswith("(stale)")
    restarting = FineTuneJobStatus(phase="Restarting", restarts=2, message="rank 1 failed")
    assert follow_line(restarting) == "Restarting (restarts: 2): rank 1 failed"
    moved = FineTuneJobStatus(phase="Restarting", restarts=2, replans=1, message="re-planned")
    assert follow_line(moved) == "Restarting (restarts: 2, re-plans: 1): re-planned"


def test_follow_prints_each_phase_once_and_returns_the_outcome():
    statuses = iter([FineTuneJobStatus(phase="Pending", message="waiting"),
                     FineTuneJobStatus(phase="Pending", message="waiting"),
                     FineTuneJobStatus(phase="Running", progress=Progress(step=1,
                                                                          total_steps=2)),
                     FineTuneJobStatus(phase="Failed", message="gave up")])
    out = io.StringIO()
    assert follow(lambda: next(statuses), out, poll_seconds=0) == 1
    text = out.getvalue()
    assert text.count("phase Pending: waiting") == 1
    assert "phase Failed: gave up" in text


def test_deleted_job_ends_the_follow_with_an_error():
    out = io.StringIO()
    assert follow(lambda: None, out, poll_seconds=0) == 1
    assert "deleted" in out.getvalue()


def test_invalid_file_is_a_user_error_naming_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: finetune.dev/v1alpha1\nkind: FineTuneJob\nmetadata: {name: x}\n"
                    "spec:\n  model: {name: gpt2}\n  dataset: {train: {path: a.jsonl}}\n"
                    "  training: {learningRate: -1}\n")
    with pytest.raises(UserError, match=r"spec.training.learningRate: must be > 0"):
        run_remote(argparse.Namespace(file=str(path), detach=True))


def test_a_valid_file_is_submitted_with_the_warnings_validate_gives(tmp_path, monkeypatch,
                                                                    capsys):
    path = tmp_path / "job.yaml"
    path.write_text(VALID)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    with pytest.raises(UserError, match="no Kubernetes context"):
        run_remote(argparse.Namespace(file=str(path), detach=True))
    assert f"{path}: warning: spec.output.pvc: is not set" in capsys.readouterr().err
