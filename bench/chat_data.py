"""Benchmark chat data with a realistic, long-tailed length distribution.

Real chat datasets are mostly short exchanges with a long tail of long multi-turn ones; that
tail is what makes padded batches waste compute. We build such conversations from the bundled
example exchanges: the number of turns per conversation is drawn from a lognormal
distribution (median 2, heavy tail), so lengths span ~30 to ~500 tokens.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "data" / "train.jsonl"
MAX_TURNS = 24


def _exchanges() -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in SOURCE.read_text().splitlines() if line.strip()]
    out = []
    for row in rows:
        by_role = {m["role"]: m["content"] for m in row["messages"]}
        out.append((by_role.get("system", ""), by_role["user"], by_role["assistant"]))
    return out


def turn_counts(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [min(MAX_TURNS, max(1, round(rng.lognormvariate(0.7, 0.9)))) for _ in range(n)]


def conversations(n: int, seed: int = 7) -> list[dict]:
    """`n` multi-turn conversations in the `messages` format, deterministic for a seed."""
    rng = random.Random(seed)
    pool = _exchanges()
    rows = []
    for turns in turn_counts(n, seed):
        picked = rng.sample(pool, turns)
        messages = [{"role": "system", "content": picked[0][0]}]
        for _, user, assistant in picked:
            messages += [{"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]
        rows.append({"messages": messages})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
