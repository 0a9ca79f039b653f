"""The bundled chat data: regenerated exactly by its script, small, well-formed, one answer
format per task, and the eval split held out by question."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import ROOT

DATA = ROOT / "examples" / "data"
FORMATS = [
    re.compile(r"^\d+ [-+*] \d+ = -?\d+\.$"),  # arithmetic
    re.compile(r"^(\w+) reversed is (\w+)\.$"),  # word reversal
    re.compile(r"^\d+ \w+ = \d+ \w+\.$"),  # unit conversion
    re.compile(r"^The capital of [\w ]+ is [\w ]+\.$"),  # capitals
]


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def test_committed_files_are_what_the_script_writes():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "make_data.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_data_is_small():
    assert sum(p.stat().st_size for p in DATA.iterdir()) < 2 * 1024 * 1024


def test_every_row_is_a_chat_with_a_known_answer_format():
    train, evals = _rows("train.jsonl"), _rows("eval.jsonl")
    assert len(train) >= 2000 and len(evals) >= 100
    used = set()
    for row in train + evals:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        answer = row["messages"][-1]["content"]
        kinds = [i for i, f in enumerate(FORMATS) if f.match(answer)]
        assert kinds, f"unknown answer format: {answer!r}"
        used.update(kinds)
        if reversal := FORMATS[1].match(answer):
            assert reversal.group(2) == reversal.group(1)[::-1]
    assert used == set(range(len(FORMATS)))


def test_no_eval_question_is_asked_in_training():
    asked = {r["messages"][1]["content"] for r in _rows("train.jsonl")}
    evals = [r["messages"][1]["content"] for r in _rows("eval.jsonl")]
    assert len(set(evals)) == len(evals)
    assert not asked & set(evals)
