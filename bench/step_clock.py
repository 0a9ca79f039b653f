"""One trainer callback that both recipes attach, so both are measured the same way.

It records, at the end of every optimizer step, the time and the trainer's count of real
input tokens (`include_num_input_tokens_seen="non_padding"`, summed over ranks), and every
logged loss. Throughput is taken over the steady part of the run: from the end of the first
step (which pays for lazy initialization, DDP's first bucket rebuild, allocator warm-up) to
the end of the last one, before any final checkpoint or model save.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class StepClock(TrainerCallback):
    def __init__(self, result_path: str | Path | None) -> None:
        self.result_path = Path(result_path) if result_path else None
        self.steps: list[dict[str, float]] = []
        self.losses: list[dict[str, float]] = []
        self.begin = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.begin = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append({"step": state.global_step, "time": time.perf_counter() - self.begin,
                           "tokens": int(state.num_input_tokens_seen or 0)})

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append({"step": state.global_step, "loss": float(logs["loss"])})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.result_path is None or int(os.environ.get("RANK", "0")) != 0:
            return
        self.result_path.parent.mkdir(parents=True, exist_ok=True)
        self.result_path.write_text(json.dumps(self.result(), indent=1))

    def result(self) -> dict[str, Any]:
        return {"steps": self.steps, "losses": self.losses, **steady_rate(self.steps)}


def steady_rate(steps: list[dict[str, float]]) -> dict[str, float | None]:
    """Real tokens per second from the end of the first step to the end of the last."""
    if len(steps) < 2:
        return {"tokens_per_second": None, "steady_tokens": 0, "steady_seconds": 0.0}
    first, last = steps[0], steps[-1]
    seconds = last["time"] - first["time"]
    tokens = last["tokens"] - first["tokens"]
    return {"tokens_per_second": tokens / seconds if seconds > 0 else None,
            "steady_tokens": tokens, "steady_seconds": seconds}
