"""What a row of a local JSON data file must be before anything reads its fields: one place for
every reader of those files, the trainer (finetune_trainer.data) and the local runner's quick
looks before training (finetune_operator.local.datastats and .answer).

A row is one JSON value of at most MAX_ROW_BYTES, nested at most MAX_DEPTH deep, in strict
JSON: no NaN or Infinity, no number a float cannot hold, no integer of more than MAX_DIGITS
digits, no key twice in one object (JSON readers disagree on all of these; Python's keeps the
last of two keys without a word, so the first value would be lost unseen). Every string in
it, keys too, is text a tokenizer can encode: no unpaired surrogate, which a lone "\\ud800"
escape produces and which the `tokenizers` library refuses with a TypeError. NUL and the
other control characters are fine: they are valid text, and a byte-level tokenizer encodes
them like any other character.

A line that breaks one of these becomes an `Unreadable` record carrying the reason, which the
caller counts or stops on. Nothing here raises on hostile input or recurses on its nesting.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

# About four million tokens: far beyond any context a run trains on (rows are cut to the
# sequence length anyway). A longer line is a file that lost its newlines, or not a data file;
# the bound keeps one line from taking the reader's memory.
MAX_ROW_BYTES = 16 * 1024 * 1024
# A chat row with tool calls and nested arguments is about 10 deep. json.loads recurses once
# per level and dies at Python's recursion limit (1000), so the depth is bounded before it.
MAX_DEPTH = 64
# 128-bit integers have 39 digits. int() of a long digit string is quadratic, and Python
# refuses more than 4300 digits with a ValueError that is not a JSON error.
MAX_DIGITS = 100
_SKIP_CHUNK = 1024 * 1024  # how much of an over-long line is read at a time to pass it by
JSON_WHITESPACE = " \t\r\n"  # the only characters JSON allows between tokens
# A JSON string, escapes and all; used to step over strings when scanning structure.
JSON_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRUCTURE = re.compile(JSON_STRING + r"|[\[\]{}]", re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
# Text decoded from UTF-8 holds no surrogate: only a \u escape in the JSON makes one, so a
# row without such an escape needs no walk through its strings.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Unreadable:
    """A line or row that holds no row a reader can use, and why (with no file or line)."""

    reason: str


class RowError(ValueError):
    """Valid JSON syntax, but not a row: nested too deep, a bad number, a key twice, or a
    string no tokenizer can encode. The message is the reason."""


def too_long() -> str:
    return (f"row longer than {MAX_ROW_BYTES} bytes (is the file missing its line breaks? "
            "split the text into shorter rows)")


# --------------------------------------------------------------------------- JSONL


def jsonl_lines(file: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of every line of a binary file that is not blank; the bytes are
    None for a line longer than MAX_ROW_BYTES, which is passed by without being held."""
    number = 0
    while raw := file.readline(MAX_ROW_BYTES + 1):
        number += 1
        if len(raw) <= MAX_ROW_BYTES or raw.endswith(b"\n"):
            if raw.strip(JSON_WHITESPACE.encode()):
                yield number, raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = file.readline(_SKIP_CHUNK)
        yield number, None


def jsonl_record(raw: bytes | None) -> Any:
    """The row one JSONL line holds (as jsonl_lines gives it), or an Unreadable saying why
    it holds none."""
    if raw is None:
        return Unreadable(too_long())
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Unreadable(f"not UTF-8 text ({err.reason} at byte {err.start + 1} of the line)")
    text = line.rstrip("\r\n")
    try:
        return parse_row(text)
    except RowError as err:
        return Unreadable(str(err))
    except json.JSONDecodeError as err:
        return Unreadable(f"invalid JSON ({err.msg} at column {err.colno}){_line_hint(err, text)}")


def read_jsonl(file: BinaryIO) -> Iterator[tuple[int, Any]]:
    """(line number, row or Unreadable) for every line of a JSONL file that is not blank."""
    for number, raw in jsonl_lines(file):
        yield number, jsonl_record(raw)


def _line_hint(err: json.JSONDecodeError, text: str) -> str:
    """What a syntax error on one line most likely means about the file's layout."""
    if err.msg.startswith("Unexpected UTF-8 BOM"):
        return "; save the file as UTF-8 without a byte order mark"
    if err.msg == "Extra data" and text.startswith(("{", "["), err.pos):
        return ("; the line holds more than one row (joined by a bare carriage return, or a "
                "lost line break?)")
    body = text.strip(JSON_WHITESPACE)
    if (err.msg == "Extra data" or err.msg.startswith("Unterminated string")
            or body.startswith(("}", "]")) or err.pos >= len(text.rstrip(JSON_WHITESPACE))):
        return "; the line holds part of a row (a .jsonl row must be on one line)"
    return ""


# --------------------------------------------------------------------------- one row


def parse_row(text: str) -> Any:
    """The value `text` holds. Raises json.JSONDecodeError when it is not JSON and RowError
    when it is JSON but breaks a rule above; never RecursionError."""
    if text.startswith("\ufeff"):  # json.loads says so; the decoder alone would not
        raise json.JSONDecodeError("Unexpected UTF-8 BOM", text, 0)
    # Counting brackets is cheap; only a row with more of them than the bound is scanned.
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_DEPTH and nesting_depth(text, MAX_DEPTH) > MAX_DEPTH:
        raise RowError(f"nested deeper than {MAX_DEPTH} levels (rows are objects of text "
                       "fields; flatten the data)")
    value = _DECODER.decode(text)
    if _SURROGATE_ESCAPE.search(text):
        problem = text_problem(value)
        if problem:
            raise RowError(problem)
    return value


def nesting_depth(text: str, limit: int) -> int:
    """How deep arrays and objects nest in `text` (1 for a flat object), counted without
    parsing and without recursion; stops counting once past `limit`. Brackets inside strings
    do not count; for text that is not JSON the count may be too high, never too low."""
    depth = deepest = 0
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def text_problem(value: Any) -> str | None:
    """Where the first string of `value` (a key or a value, at any depth) holds an unpaired
    surrogate, and what to do; None when every string is text. Walks without recursion; a
    string's path is spelled out only for the one reported."""
    stack: list[tuple[Any, _Where]] = [(value, None)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return _surrogate(found, _path(where) or "the row")
        elif isinstance(item, dict):
            for key in item:
                found = _SURROGATE.search(key)
                if found:
                    return _surrogate(found, f"a key of {_path(where) or 'the row'}")
            stack.extend((child, (where, _step(key))) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((child, (where, f"[{i}]")) for i, child in reversed(list(enumerate(item))))
    return None


def _surrogate(found: re.Match[str], where: str) -> str:
    return (f"{where}: unpaired surrogate U+{ord(found.group()):04X} at character "
            f"{found.start() + 1} (a \\u escape for half of a character: no tokenizer can "
            "encode it; write the whole character, or its two escapes together)")


# Where a value sits: (where its container sits, the step from there), None for the row.
_Where = tuple["_Where", str] | None


def _path(where: _Where) -> str:
    steps = []
    while where is not None:
        where, step = where
        steps.append(step)
    return "".join(reversed(steps)).removeprefix(".")


def _step(key: str) -> str:
    """`.key`, or `["key"]` for a key that is not a plain name (escaped: one line)."""
    return f".{key}" if _NAME.match(key) else f"[{json.dumps(key)}]"


# --------------------------------------------------------------------------- strict JSON


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row = dict(pairs)
    if len(row) < len(pairs):
        twice = next(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        raise RowError(f"key {json.dumps(twice)} appears twice in one object (JSON readers "
                       "keep different ones; write each key once)")
    return row


def _no_constant(name: str) -> Any:
    raise RowError(f"{name} is not a JSON value (write null, or a number)")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise RowError(f"number {literal[:40]} is too large for a float")
    return number


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_DIGITS:
        raise RowError(f"integer of {len(literal.lstrip('-'))} digits (at most {MAX_DIGITS}; "
                       "write big numbers as strings)")
    return int(literal)


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                            parse_float=_finite_float, parse_int=_bounded_int)
