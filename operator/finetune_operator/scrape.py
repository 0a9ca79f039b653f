"""Training progress read from a trainer's Prometheus endpoint.

Rank 0 of every run serves `finetune_train_*` gauges (see docs/metrics.md). The operator's
progress timer and the local runner's progress bar both turn that text into a `Progress`.
"""

from __future__ import annotations

import math
import urllib.request
from datetime import UTC, datetime

from finetune_contract.api import Progress
from finetune_contract.progress_gauges import PROGRESS_GAUGES
from prometheus_client.parser import text_string_to_metric_families

# Where the run's time went (goodput.py), in seconds.
RUN_TIME_FIELDS = ("run_seconds", "startup_seconds", "step_seconds", "eval_seconds",
                   "checkpoint_seconds")


class ProgressUnavailable(Exception):
    """The metrics endpoint could not be read."""


def parse_progress(text: str, now: datetime | None = None) -> Progress:
    """Progress from Prometheus exposition text. Unknown or NaN samples are left unset."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            field = PROGRESS_GAUGES.get(sample.name)
            if field and not math.isnan(sample.value):
                values[field] = sample.value
    step = _int(values.get("step"))
    total = _int(values.get("total_steps"))
    # Rounded to what a reader can use: `kubectl get ftj` prints the numbers as stored.
    return Progress(
        step=step,
        total_steps=total,
        percent=round(100.0 * step / total, 1) if step is not None and total else None,
        epoch=_round(values.get("epoch"), 2),
        loss=_round(values.get("loss"), 4),
        eval_loss=_round(values.get("eval_loss"), 4),
        tokens_per_second=_round(values.get("tokens_per_second"), 0),
        eta_seconds=_round(values.get("eta_seconds"), 0),
        resumed_from_step=_int(values.get("resumed_from_step")),
        **{part: _round(values.get(part), 1) for part in RUN_TIME_FIELDS},
        peak_memory_bytes=_int(values.get("peak_memory_bytes")),
        updated_at=now or datetime.now(UTC),
        stale=False,
    )


def fetch_progress(url: str, timeout: float = 2.0) -> Progress:
    """GET a metrics endpoint and parse it; raises ProgressUnavailable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
        # Something that is not Prometheus text (a proxy's error page) is unavailable too.
        return parse_progress(text)
    except (OSError, ValueError) as err:
        raise ProgressUnavailable(f"{url}: {err}") from None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
