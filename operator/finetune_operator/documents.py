"""Reading FineTuneJob YAML files: multi-document, '-' for stdin, errors with file and line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Document:
    """One YAML document of a file, numbered from 1, with the line it starts on."""

    source: str
    index: int
    line: int
    body: Any


class DocumentError(Exception):
    """A file that cannot be read or parsed; the message names the file and line."""


def read_documents(source: str) -> list[Document]:
    text = _read(source)
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        bodies = list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(err, "problem", None) or str(err)
        raise DocumentError(f"{where}: not valid YAML: {problem}") from None
    docs = []
    for i, (node, body) in enumerate(zip(nodes, bodies, strict=True), start=1):
        if body is None:
            continue  # an empty document between '---' separators
        docs.append(Document(source, i, node.start_mark.line + 1, body))
    return docs


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DocumentError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise DocumentError(f"{source}: is a directory, expected a YAML file") from None
    except UnicodeDecodeError as err:
        raise DocumentError(f"{source}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DocumentError(f"{source}: cannot read: {err.strerror}") from None
