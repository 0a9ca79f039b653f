"""Stop on SIGTERM (or SIGINT) with a complete checkpoint at the current optimizer step.

Spot reclaims, Kueue preemption, drains and `kubectl delete pod` all end a pod with SIGTERM
and a grace period (the pod's terminationGracePeriodSeconds). Without this the
run would lose every step since its last periodic checkpoint.

A signal only sets a flag. At the end of every micro-step and every optimizer step the ranks
agree on it with one scalar all-reduce (MAX): a signal usually reaches the ranks of one pod
only, and the gang must stop at the same point to write one checkpoint together. A stop
agreed between micro-steps abandons the partial accumulation (the weights are those of the
last optimizer step, which is what the checkpoint holds and what a resume skips data to); a
stop at a step's end keeps it. The trainer then saves through its usual path, so the
checkpoint gets the COMPLETE marker only once every rank has written (trainer.py), and a
checkpoint cut short by the grace period's SIGKILL is never resumed (checkpoints.py).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Self

from transformers import TrainerCallback

from finetune_trainer import checkpoints

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Remembers the first SIGTERM/SIGINT; installed for the training loop only."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def gang_agrees(local: bool) -> bool:
    """True on every rank when any rank asks to stop (one scalar all-reduce)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return local
    flag = torch.tensor([1 if local else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class PreemptionCallback(TrainerCallback):
    """Turns an agreed stop into `save now, then stop` (see the module docstring)."""

    def __init__(self, request: StopRequest, output_dir: str) -> None:
        self.request = request
        self.output_dir = output_dir
        self.stopped_at: int | None = None  # the step of the emergency checkpoint
        self.saved = False

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._check(state, control)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._check(state, control)

    def _check(self, state: Any, control: Any) -> None:
        if self.stopped_at is not None or not gang_agrees(self.request.requested):
            return
        self.stopped_at = state.global_step
        control.should_training_stop = True
        control.should_evaluate = False  # no time for it inside the grace period
        # Step 0 has nothing to keep, and a step already saved is complete on disk: writing
        # it again would put a half-written checkpoint under a COMPLETE marker.
        done = checkpoints.checkpoint_path(self.output_dir, state.global_step)
        self.saved = state.global_step > 0 and not checkpoints.is_complete(done)
        control.should_save = self.saved or control.should_save

    def message(self) -> str:
        why = self.request.signal_name or "a peer's signal"
        if not self.stopped_at:
            return f"{why} before the first optimizer step: nothing to save; exiting"
        name = checkpoints.checkpoint_path(self.output_dir, self.stopped_at).name
        how = "wrote" if self.saved else "kept"
        return (f"{why}: {how} the complete checkpoint {name} at step {self.stopped_at}; "
                "the next attempt resumes there")
