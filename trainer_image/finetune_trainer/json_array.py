"""A .json dataset: one array of rows, read strictly.

Where each row begins and ends is found by scanning the array's structure (strings, brackets,
commas) without parsing and without recursion; each row is then parsed on its own by the
rules every reader shares (finetune_contract.datarows). So a row that is JSON but too long,
too deep or holding a string no tokenizer can encode is a bad row at its own line, skipped
and counted under onError: skip like a bad JSONL line.

Damage to the array itself stops the reading in both modes: a row that is not JSON, a missing
or trailing comma, no closing bracket, text after it. Past such damage where rows begin and
end is a guess, and rows that cannot be found cannot be counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetune_contract import datarows
from finetune_contract.datarows import JSON_STRING, JSON_WHITESPACE, RowError, Unreadable

from finetune_trainer.errors import TrainerError

_TOKEN = re.compile(JSON_STRING + r"|[\[\]{},]", re.DOTALL)
_SPACE = re.compile(f"[{JSON_WHITESPACE}]*")
_BROKEN = "a broken array cannot be skipped row by row"


class _Lines:
    """Line numbers of positions in `text`, asked in increasing order (counted once)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def read_json_array(path: Path) -> Iterator[tuple[str, Any]]:
    """("file:line", row or Unreadable) for every row of the array, located by the line it
    starts on; TrainerError with file:line for damage to the array."""
    text = _utf8(path)
    if text.startswith("\ufeff"):
        raise TrainerError(f"{path}:1: the file starts with a byte order mark; save it as UTF-8 "
                           "without one")
    lines = _Lines(text)
    pos = _space(text, 0)
    if pos == len(text) or text[pos] != "[":
        raise TrainerError(f"{path}:{lines.at(pos)}: a .json dataset must be an array of rows; "
                           "use .jsonl for one row per line")
    pos = _space(text, pos + 1)
    if text.startswith("]", pos):
        _expect_end(path, text, pos + 1, lines)
        return
    while True:
        end = _row_end(text, pos)
        line = lines.at(pos)
        if text.startswith("}", end):
            raise TrainerError(f"{path}:{lines.at(end)}: invalid JSON (a '}}' that closes "
                               f"nothing); {_BROKEN}")
        yield f"{path}:{line}", _record(path, text[pos:end], line)
        if end == len(text):
            raise TrainerError(f"{path}:{lines.at(end)}: the array has no closing ']' (is the "
                               "file cut short?)")
        if text[end] == "]":
            break
        comma = end
        pos = _space(text, end + 1)
        if pos == len(text):
            raise TrainerError(f"{path}:{lines.at(pos)}: the array has no closing ']' (is the "
                               "file cut short?)")
        if text.startswith("]", pos):
            raise TrainerError(f"{path}:{lines.at(comma)}: a ',' after the last row (JSON allows "
                               "no trailing comma; remove it)")
    _expect_end(path, text, end + 1, lines)


def _utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise TrainerError(f"{path}:{line}: not UTF-8 text ({err.reason}); a .json dataset "
                           "must be UTF-8 as a whole") from None


def _space(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()


def _row_end(text: str, pos: int) -> int:
    """Where the row starting at `pos` ends: the ',' or closing bracket after it at the
    array's own level, or the end of the text."""
    depth = 0
    for match in _TOKEN.finditer(text, pos):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
        elif token in ("]", "}"):
            if depth == 0:
                return match.start()
            depth -= 1
        elif token == "," and depth == 0:
            return match.start()
    return len(text)


def _record(path: Path, row: str, line: int) -> Any:
    """The row parsed, an Unreadable for a row that is JSON but not usable, or TrainerError
    for text that is not JSON (the array is broken there)."""
    if len(row.encode("utf-8")) > datarows.MAX_ROW_BYTES:
        return Unreadable(datarows.too_long())
    try:
        return datarows.parse_row(row)
    except RowError as err:
        return Unreadable(str(err))
    except json.JSONDecodeError as err:
        where = line + row.count("\n", 0, err.pos)
        problem = "a ',' is missing before this row" if err.msg == "Extra data" else err.msg
        raise TrainerError(f"{path}:{where}: invalid JSON ({problem}); {_BROKEN}") from None


def _expect_end(path: Path, text: str, pos: int, lines: _Lines) -> None:
    pos = _space(text, pos)
    if pos < len(text):
        raise TrainerError(f"{path}:{lines.at(pos)}: text after the array's closing ']' (a "
                           "']' too many, or rows outside the array?); a .json dataset is one "
                           "array")
