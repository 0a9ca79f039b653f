"""The exception for mistakes of the user's, raised wherever one is found (the command line,
the local runner, submitting to a cluster) and turned into one line by `finetune` (cli/)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake of the user's: printed as one line, exit status 1, never a traceback."""
