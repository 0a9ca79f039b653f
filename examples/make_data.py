"""Write the bundled chat data of the tiny example: `examples/data/{train,eval}.jsonl`.

Every conversation is written by this script (no third-party text): short questions with
answers in one fixed format per task, so that a tiny model trained for a minute visibly learns
the format. Four tasks:

- arithmetic:       "What is 17 + 25?"                -> "17 + 25 = 42."
- word reversal:    "Reverse the word: garden"        -> "garden reversed is nedrag."
- unit conversion:  "Convert 3 km to m."               -> "3 km = 3000 m."
- country capitals: "What is the capital of Peru?"    -> "The capital of Peru is Lima."

The eval split is held out by question (no eval question appears word for word in training).
The output is deterministic (fixed seed), so the committed files can be regenerated exactly:

    python examples/make_data.py            # writes examples/data/
    python examples/make_data.py --check    # fails if the committed files differ
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

SEED = 20261101
TRAIN_ROWS = 3000
EVAL_ROWS = 200
DATA_DIR = Path(__file__).resolve().parent / "data"

SYSTEM = "You are a precise assistant. Answer in one short sentence."

WORDS = [
    "apple", "river", "garden", "planet", "silver", "window", "market", "orange", "pencil",
    "rocket", "forest", "castle", "bridge", "candle", "dragon", "engine", "falcon", "guitar",
    "harbor", "island", "jacket", "kettle", "ladder", "meadow", "needle", "orchid", "pepper",
    "quartz", "rabbit", "saddle", "tunnel", "violet", "wallet", "yellow", "zipper", "anchor",
    "basket", "cactus", "desert", "feather", "glacier", "hammer", "iceberg", "jungle",
    "kitten", "lemon", "magnet", "nectar", "oyster", "parrot", "puzzle", "ribbon", "shadow",
    "thunder", "umbrella", "valley", "walnut", "canyon", "blanket", "cookie", "donkey",
    "eagle", "fabric", "ginger", "helmet", "insect", "jigsaw", "koala", "lantern", "mirror",
    "noodle", "onion", "pillow", "quiver", "rhythm", "spider", "tomato", "unicorn", "vessel",
    "wizard", "yogurt", "zebra", "almond", "beacon", "cobalt", "dolphin", "ember", "fossil",
    "goblet", "hazel", "ivory", "jasmine", "kernel", "lizard", "mango", "nugget", "olive",
    "pebble", "quill", "raven", "sapphire", "tiger", "velvet", "willow", "breeze", "copper",
    "dinner", "elbow", "finger", "galaxy", "honey", "indigo", "jelly", "kayak", "lobster",
    "marble", "nickel", "oxygen", "panda",
]

# Country -> capital; written out here, common knowledge.
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Brazil": "Brasilia", "Argentina": "Buenos Aires",
    "Peru": "Lima", "Chile": "Santiago", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Nigeria": "Abuja", "Ghana": "Accra", "Morocco": "Rabat", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw",
    "Austria": "Vienna", "Greece": "Athens", "Turkey": "Ankara", "Russia": "Moscow",
    "Ukraine": "Kyiv", "Ireland": "Dublin", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Hungary": "Budapest", "Czechia": "Prague", "Australia": "Canberra",
    "New Zealand": "Wellington", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "Indonesia": "Jakarta", "Philippines": "Manila", "South Korea": "Seoul", "Iran": "Tehran",
    "Iraq": "Baghdad", "Cuba": "Havana", "Colombia": "Bogota", "Venezuela": "Caracas",
    "Ethiopia": "Addis Ababa", "Iceland": "Reykjavik", "Switzerland": "Bern", "Romania": "Bucharest",
}

# (from unit, to unit, factor, largest amount asked)
CONVERSIONS = [
    ("km", "m", 1000, 20), ("m", "cm", 100, 50), ("cm", "mm", 10, 90),
    ("kg", "g", 1000, 20), ("hours", "minutes", 60, 24), ("minutes", "seconds", 60, 30),
    ("liters", "ml", 1000, 10), ("days", "hours", 24, 14), ("weeks", "days", 7, 30),
]

ARITHMETIC_QUESTIONS = ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "{a} {op} {b} = ?"]
REVERSAL_QUESTIONS = ["Reverse the word: {w}", "Spell {w} backwards.", "What is {w} reversed?"]
CONVERSION_QUESTIONS = ["Convert {n} {src} to {dst}.", "How many {dst} are in {n} {src}?"]
CAPITAL_QUESTIONS = ["What is the capital of {c}?", "Name the capital city of {c}."]

Chat = tuple[str, str]


def arithmetic(rng: random.Random) -> Chat:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        if op == "-" and b > a:
            a, b = b, a  # keep answers non-negative
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    question = rng.choice(ARITHMETIC_QUESTIONS).format(a=a, op=op, b=b)
    return question, f"{a} {op} {b} = {result}."


def reversal(rng: random.Random) -> Chat:
    word = rng.choice(WORDS)
    question = rng.choice(REVERSAL_QUESTIONS).format(w=word)
    return question, f"{word} reversed is {word[::-1]}."


def conversion(rng: random.Random) -> Chat:
    src, dst, factor, largest = rng.choice(CONVERSIONS)
    n = rng.randint(1, largest)
    question = rng.choice(CONVERSION_QUESTIONS).format(n=n, src=src, dst=dst)
    return question, f"{n} {src} = {n * factor} {dst}."


def capital(rng: random.Random) -> Chat:
    country = rng.choice(sorted(CAPITALS))
    question = rng.choice(CAPITAL_QUESTIONS).format(c=country)
    return question, f"The capital of {country} is {CAPITALS[country]}."


TASKS: list[Callable[[random.Random], Chat]] = [arithmetic, reversal, conversion, capital]


def conversation(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def chats(rng: random.Random) -> Iterator[Chat]:
    while True:
        yield rng.choice(TASKS)(rng)


def build() -> dict[str, str]:
    """File name -> content.

    The eval split is held out by question: its questions are drawn first (all different),
    and no training row asks any of them word for word. The same fact can still appear in
    training under another phrasing ("Reverse the word: ladder" vs "Spell ladder backwards.");
    the eval loss measures that generalization, not recall of seen rows.
    """
    stream = chats(random.Random(SEED))
    evals: dict[str, str] = {}
    while len(evals) < EVAL_ROWS:
        question, answer = next(stream)
        evals.setdefault(question, answer)
    train = []
    while len(train) < TRAIN_ROWS:
        question, answer = next(stream)
        if question not in evals:
            train.append((question, answer))
    return {"train.jsonl": _jsonl(train), "eval.jsonl": _jsonl(list(evals.items()))}


def _jsonl(rows: list[Chat]) -> str:
    return "".join(json.dumps(conversation(q, a)) + "\n" for q, a in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the files in --out differ from what would be written")
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        stale = [n for n, text in files.items()
                 if not (args.out / n).exists() or (args.out / n).read_text() != text]
        for name in stale:
            print(f"{args.out / name}: out of date, run python examples/make_data.py",
                  file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name} ({text.count(chr(10))} conversations, "
              f"{len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
