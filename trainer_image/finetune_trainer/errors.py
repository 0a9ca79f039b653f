"""The one exception type for mistakes the user can fix (bad data, bad config).

`python -m finetune_trainer` (and `python -m finetune_trainer.model_cache`) prints such an
error as one line on stderr and exits 2, without a traceback (`exit_status`); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from finetune_contract.layout import EXIT_STOPPED, TRAINER_ERROR_PREFIX, TRAINER_STOPPED_PREFIX

EXIT_USER_ERROR = 2
# After an emergency checkpoint (preemption.py): 128 + SIGTERM, as if killed by it. The gang's
# Job fails (no index counts as completed), so the operator restarts it and it resumes.
EXIT_PREEMPTED = EXIT_STOPPED


class TrainerError(Exception):
    """A user-fixable problem; the message names the field or file:line and what to do."""


class Stopped(Exception):
    """Training stopped on a signal after its emergency checkpoint (preemption.py); the
    exit status is the one a rank killed by SIGTERM would have. An empty message: a rank
    that stopped with the gang and leaves the reason to rank 0."""


def exit_status(work: Callable[[], object]) -> int:
    """Run `work`: 0 when it returns, EXIT_USER_ERROR with one line on stderr when it raises
    a TrainerError, EXIT_PREEMPTED with one line when it was stopped by a signal."""
    try:
        work()
    except TrainerError as err:
        print(f"{TRAINER_ERROR_PREFIX} {err}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except Stopped as stop:
        if str(stop):
            print(f"{TRAINER_STOPPED_PREFIX} {stop}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    return 0
