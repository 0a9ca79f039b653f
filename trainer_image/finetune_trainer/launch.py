"""`python -m finetune_trainer.launch ARGS`: torchrun with ARGS, the training container's
command, ending with the status of a process killed by the signal that stopped it.

torchrun itself exits 1 when SIGTERM stops it (its SignalException is never caught), after it
passed the signal to its ranks and gave them its shutdown timeout to write the emergency
checkpoint. Exit 1 reads as a rank that broke; 128 + SIGTERM (EXIT_STOPPED) is what the
operator reads as "stopped": a preemption, a suspension or a deleted pod, not a failure to
restart the gang for (lifecycle/pods.py).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    # Imported here: `--help` and a bad argument must not wait for torch.
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except SignalException as stop:
        print(f"finetune-trainer: torchrun stopped by {stop.sigval.name}; the ranks had its "
              "shutdown timeout to write their checkpoint", file=sys.stderr, flush=True)
        return 128 + int(stop.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
