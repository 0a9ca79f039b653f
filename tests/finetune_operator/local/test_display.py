"""The progress line and when it is written (TTY redraw vs periodic plain lines)."""

from __future__ import annotations

import io

from finetune_contract.api import Progress
from finetune_operator.local.display import (
    ProgressDisplay,
    format_duration,
    format_progress,
    format_rate,
    progress_bar,
)


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == "?"
    assert format_duration(float("nan")) == "?"


def test_format_rate():
    assert format_rate(512) == "512"
    assert format_rate(12_345) == "12.3k"
    assert format_rate(2_500_000) == "2.5M"


def test_progress_bar_fills_in_proportion():
    assert progress_bar(0, 100, width=10) == "[..........]"
    assert progress_bar(50, 100, width=10) == "[#####.....]"
    assert progress_bar(100, 100, width=10) == "[##########]"
    assert progress_bar(150, 100, width=10) == "[##########]"


def test_format_progress_shows_every_field():
    line = format_progress(Progress(step=30, total_steps=120, epoch=0.25, loss=2.34567,
                                    eval_loss=2.5, tokens_per_second=15300.0, eta_seconds=95))
    assert "step 30/120" in line
    assert " 25%" in line
    assert "epoch 0.25" in line
    assert "loss 2.3457" in line
    assert "eval 2.5000" in line
    assert "15.3k tok/s" in line
    assert "ETA 1:35" in line


def test_format_progress_leaves_out_unknown_fields():
    line = format_progress(Progress(step=3))
    assert line == "step 3"
    assert format_progress(Progress()) == "waiting for the first step"


def test_tty_redraws_one_line():
    stream = io.StringIO()
    display = ProgressDisplay(stream, tty=True)
    display.show("step 1/10")
    display.show("step 2/10")
    display.finish("step 10/10")
    text = stream.getvalue()
    assert text.count("\n") == 1  # a single line, redrawn with carriage returns
    assert text.count("\r") == 3
    assert text.endswith("step 10/10\x1b[K\n")


def test_plain_output_writes_periodic_lines():
    stream = io.StringIO()
    display = ProgressDisplay(stream, tty=False, interval=10)
    display.show("step 1/10", now=0)
    display.show("step 2/10", now=5)  # not due yet
    display.show("step 3/10", now=11)
    display.show("step 3/10", now=30)  # unchanged: not repeated
    display.finish("step 10/10")
    assert stream.getvalue().splitlines() == ["step 1/10", "step 3/10", "step 10/10"]
    assert "\r" not in stream.getvalue()


def test_plain_finish_writes_a_suppressed_final_state_once():
    stream = io.StringIO()
    display = ProgressDisplay(stream, tty=False, interval=10)
    display.show("step 1/10", now=0)
    display.show("step 10/10", now=1)  # suppressed by the interval
    display.finish("step 10/10")
    display.finish("step 10/10")
    assert stream.getvalue().splitlines() == ["step 1/10", "step 10/10"]
