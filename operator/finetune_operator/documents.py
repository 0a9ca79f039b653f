"""Reading FineTuneJob YAML files: multi-document, '-' for stdin, errors with file and line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from finetune_contract.api import GROUP


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


def is_other_resource(body: Any) -> bool:
    """A Kubernetes object of another API (a Secret, a PVC) sharing the file with the job.

    Only an object that says so, with an apiVersion and a kind outside finetune.dev, is one:
    anything else is meant as a FineTuneJob and is validated as such, so that a wrong
    version or kind of ours is an error and not a silent skip.
    """
    if not isinstance(body, dict):
        return False
    api, kind = body.get("apiVersion"), body.get("kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        return False
    group = api.rpartition("/")[0]  # "" for the core API (v1)
    return group != GROUP


def split_jobs(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """The documents meant as FineTuneJobs, and the other resources they came with."""
    others = [doc for doc in docs if is_other_resource(doc.body)]
    return [doc for doc in docs if not is_other_resource(doc.body)], others


def one_job(source: str) -> Document:
    """The one FineTuneJob document of `source` (other APIs' objects beside it are left out)."""
    docs, _ = split_jobs(read_documents(source))
    if len(docs) != 1:
        raise DocumentError(f"{source}: expected one FineTuneJob document, found {len(docs)}")
    return docs[0]


def describe(doc: Document) -> str:
    """`doc 2 (Secret hf-token)`: how a skipped document is named to the user."""
    meta = doc.body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"doc {doc.index} ({doc.body['kind']}{f' {name}' if name else ''})"
