"""The live progress of a local run: one redrawn line on a terminal, plain lines in logs.

`format_progress` is a pure function of a `Progress`; `ProgressDisplay` only decides when and
how to write it (carriage return on a TTY, a new line every `interval` seconds otherwise, so
CI logs stay readable).
"""

from __future__ import annotations

import math
import shutil
import time
from typing import TextIO

from finetune_contract.api import Progress

BAR_WIDTH = 20
PLAIN_INTERVAL_SECONDS = 10.0
_CLEAR_TO_END = "\x1b[K"


def format_duration(seconds: float | None) -> str:
    """75 -> '1:15', 3725 -> '1:02:05'; unknown -> '?'."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(tokens_per_second: float) -> str:
    """12345 -> '12.3k'."""
    if tokens_per_second >= 1e6:
        return f"{tokens_per_second / 1e6:.1f}M"
    if tokens_per_second >= 1e3:
        return f"{tokens_per_second / 1e3:.1f}k"
    return f"{tokens_per_second:.0f}"


def progress_bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = min(width, max(0, round(width * step / total))) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


def format_progress(p: Progress) -> str:
    """One line: bar, step/total, percent, epoch, loss, eval loss, tokens/s, ETA."""
    parts = []
    if p.step is not None and p.total_steps:
        parts.append(f"{progress_bar(p.step, p.total_steps)} step {p.step}/{p.total_steps}")
        parts.append(f"{100 * p.step / p.total_steps:3.0f}%")
    elif p.step is not None:
        parts.append(f"step {p.step}")
    if p.epoch is not None:
        parts.append(f"epoch {p.epoch:.2f}")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4f}")
    if p.eval_loss is not None:
        parts.append(f"eval {p.eval_loss:.4f}")
    if p.tokens_per_second is not None:
        parts.append(f"{format_rate(p.tokens_per_second)} tok/s")
    if p.eta_seconds is not None:
        parts.append(f"ETA {format_duration(p.eta_seconds)}")
    return "  ".join(parts) if parts else "waiting for the first step"


def format_waiting(elapsed: float) -> str:
    return f"starting the ranks (loading data, building the model) {format_duration(elapsed)}"


class ProgressDisplay:
    """Writes progress lines to `stream`: redrawn in place on a TTY, periodic otherwise."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None,
                 interval: float = PLAIN_INTERVAL_SECONDS) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval
        self._last_written = ""
        self._last_written_at: float | None = None
        self._open_line = False

    def show(self, line: str, *, now: float | None = None) -> None:
        """Show the current state; in plain mode only when it changed and is due."""
        now = time.monotonic() if now is None else now
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r" + line[:width] + _CLEAR_TO_END)
            self.stream.flush()
            self._open_line = True
        elif line != self._last_written and self._due(now):
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_written = line
            self._last_written_at = now

    def finish(self, line: str | None = None) -> None:
        """End the live line; plain mode writes the final state if it was not written."""
        if line is not None:
            self.show(line, now=float("inf"))
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False

    def _due(self, now: float) -> bool:
        return self._last_written_at is None or now - self._last_written_at >= self.interval
