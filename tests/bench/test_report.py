"""bench/report.py: every section of docs/benchmarks.md is rendered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report

pytestmark = [pytest.mark.slow]


def test_report_renders_every_section(tmp_path: Path) -> None:
    results = {"machine": {"date": "today", "cpu": "cpu", "cores": 2, "versions": {}},
               "throughput": None, "adapters": None, "planner": None, "operator": None}
    text = report.render(results, command="python -m bench")
    for heading in ("## Machine", "## How to reproduce", "## 1.",
                    "### LoRA and QLoRA against full fine-tuning", "## 2.", "## 3."):
        assert heading in text
    json.dumps(results)
