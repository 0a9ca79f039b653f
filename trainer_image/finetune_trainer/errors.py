"""The one exception type for mistakes the user can fix (bad data, bad config).

`python -m finetune_trainer` prints such an error as one line on stderr and exits non-zero,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TrainerError(Exception):
    """A user-fixable problem; the message names the field or file:line and what to do."""
