"""A rank's exit status and the one line it leaves for the operator and `finetune run`."""

from __future__ import annotations

from finetune_trainer.errors import (
    EXIT_PREEMPTED,
    EXIT_USER_ERROR,
    TRAINER_ERROR_PREFIX,
    TRAINER_STOPPED_PREFIX,
    Stopped,
    TrainerError,
    exit_status,
)


def _raise(error: Exception):
    def work():
        raise error
    return work


def test_a_finished_rank_exits_0_silently(capsys):
    assert exit_status(lambda: None) == 0
    assert capsys.readouterr().err == ""


def test_a_user_mistake_exits_with_one_line_naming_it(capsys):
    assert exit_status(_raise(TrainerError("data.path: no such file"))) == EXIT_USER_ERROR
    assert capsys.readouterr().err == f"{TRAINER_ERROR_PREFIX} data.path: no such file\n"


def test_rank_0_says_why_it_stopped(capsys):
    assert exit_status(_raise(Stopped("SIGTERM at step 7"))) == EXIT_PREEMPTED
    assert capsys.readouterr().err == f"{TRAINER_STOPPED_PREFIX} SIGTERM at step 7\n"


def test_a_rank_that_stopped_with_the_gang_exits_preempted_without_a_line(capsys):
    assert exit_status(_raise(Stopped(""))) == EXIT_PREEMPTED
    assert capsys.readouterr().err == ""
