"""Prometheus metrics of one training rank (see docs/metrics.md).

Each rank serves its own CollectorRegistry on metrics_port + local rank. The operator and the
local runner read rank 0's progress gauges by the names finetune_contract/progress_gauges.py
holds (a test checks that every one of them is served here). Labels are namespace,
finetunejob and rank (never `job`: Prometheus renames a scraped `job` label to
`exported_job`).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

LABELS = ("namespace", "finetunejob", "rank")
GAUGES = {
    "finetune_train_loss": "Training loss averaged over the last logging interval.",
    "finetune_eval_loss": "Loss on the evaluation set at the latest evaluation.",
    "finetune_train_tokens_per_second": "Input tokens per second, all ranks together, over "
                                        "the last 30 s of logs (since the first step in a "
                                        "shorter run).",
    "finetune_train_tokens_total": "Input tokens processed so far, all ranks together.",
    "finetune_train_step": "Optimizer steps done.",
    "finetune_train_total_steps": "Optimizer steps planned for the whole run.",
    "finetune_train_epoch": "Fractional epoch.",
    "finetune_train_learning_rate": "Learning rate of the last optimizer step (of the head's "
                                    "parameter group).",
    "finetune_train_grad_norm": "Gradient norm before clipping at the last logged step.",
    "finetune_train_mfu": "Model FLOPs utilization: achieved training FLOP/s over the "
                          "hardware peak of all ranks (0..1).",
    "finetune_train_eta_seconds": "Estimated seconds until the planned last step.",
    "finetune_train_resumed_step": "Optimizer step this run resumed from (its checkpoint's "
                                   "step; 0 when it started fresh).",
    "finetune_train_peak_memory_bytes": "Peak memory of this rank: device memory allocated on "
                                        "GPU, the process's peak resident set on CPU.",
    # Where this run's wall time went (callbacks.TimeAccounting; the operator's goodput).
    "finetune_train_run_seconds": "Seconds since this run's process started.",
    "finetune_train_startup_seconds": "Seconds from the process's start to its first "
                                      "optimizer step (imports, model, data, resume).",
    "finetune_train_step_seconds_total": "Seconds inside optimizer steps this run.",
    "finetune_train_eval_seconds_total": "Seconds in evaluations this run.",
    "finetune_train_checkpoint_seconds_total": "Seconds writing checkpoints this run.",
}


class RankMetrics:
    """The gauges of one rank, all labelled with the same namespace/job/rank."""

    def __init__(self, namespace: str, job: str, rank: int,
                 registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = {"namespace": namespace, "finetunejob": job, "rank": str(rank)}
        self._gauges = {
            name: Gauge(name, doc, LABELS, registry=self.registry).labels(**labels)
            for name, doc in GAUGES.items()
        }
        for gauge in self._gauges.values():
            gauge.set(math.nan)  # "not known yet": parse_progress leaves NaN fields unset
        self._server: Any = None

    def set(self, name: str, value: float | None) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self._gauges[name].set(float(value))

    def serve(self, host: str, port: int) -> None:
        """Start the HTTP endpoint (a daemon thread); port 0 means no endpoint. A port
        another process holds costs this rank its endpoint, never its training."""
        if not port:
            return
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            print(f"finetune-trainer: warning: metrics on {host}:{port} not served ({err}); "
                  "training goes on without them", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def peak_memory_bytes() -> int:
    """Peak device memory on CUDA, peak resident set size of this process otherwise."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return int(torch.cuda.max_memory_allocated())
    except ImportError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def measure_cpu_peak_flops(dtype_name: str = "float32", size: int = 1024,
                           repeats: int = 5) -> float:
    """Dense matmul FLOP/s of this process's threads: the CPU's practical peak, used as the
    MFU denominator when no peak is configured."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm up kernels and caches
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def training_flops_per_token(parameters: int, trainable: int) -> float:
    """FLOPs per token of one training step: forward 2N, backward 2N for activation
    gradients plus 2T for weight gradients (T trainable). Full tuning gives the usual 6N."""
    return 2.0 * parameters + 2.0 * parameters + 2.0 * trainable


RATE_WINDOW_SECONDS = 30.0


@dataclass
class ThroughputWindow:
    """Tokens/s over the last RATE_WINDOW_SECONDS of logs, and the ETA since the window began.

    The rate spans many steps, not one logging interval: a rank's log call lands a few
    milliseconds early or late, which on a step of 50 ms moves a one-step rate by half, so
    two ranks of one job would report different rates for the same job.

    The window begins at the end of a run's first step, not at train begin: every rank
    leaves that step's gradient all-reduce together, while ranks enter training at different
    times and the early ones wait there for the slowest peer."""

    clock: Callable[[], float] = time.monotonic
    start_time: float | None = None
    start_step: int = 0
    # (time, tokens) at the window's start and at each log since, oldest first.
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def begin(self, step: int, tokens: int) -> None:
        self.start_time, self.start_step = self.clock(), step
        self.samples = deque([(self.start_time, tokens)])

    @property
    def begun(self) -> bool:
        return self.start_time is not None

    def tokens_per_second(self, tokens: int) -> float | None:
        """The rate over the window, ending now; None before the window began or when no
        token went by since (a log at the step the window began)."""
        if not self.begun or tokens <= self.samples[-1][1]:
            return None
        now = self.clock()
        # Keep the newest sample older than the window as its start: a log interval longer
        # than the window still has a start.
        while len(self.samples) > 1 and self.samples[1][0] <= now - RATE_WINDOW_SECONDS:
            self.samples.popleft()
        since, tokens_then = self.samples[0]
        self.samples.append((now, tokens))
        return (tokens - tokens_then) / (now - since) if now > since else None

    def eta_seconds(self, step: int, total: int) -> float | None:
        done = step - self.start_step
        if self.start_time is None or done <= 0 or total <= 0:
            return None
        return max(0.0, (self.clock() - self.start_time) / done * (total - step))
