"""Reading FineTuneJob YAML files: multi-document, '-' for stdin, errors with file and line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from finetune_contract.api import GROUP

from finetune_operator import bounded_yaml, redact


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
    """The non-empty documents of `source` (see read_file for the empty ones)."""
    return read_file(source)[0]


def read_file(source: str) -> tuple[list[Document], list[str]]:
    """The non-empty documents of `source`, and a warning (file:line) per empty one.

    An empty document (`---` followed by `---`) is skipped, as kubectl skips it, and not
    refused: kubectl apply takes the same file. It is told, since it is often the sign of
    a job that was meant to be there and got cut.
    """
    try:
        loaded = list(bounded_yaml.load_all(_read(source)))
    except yaml.YAMLError as err:
        raise DocumentError(_yaml_message(source, err)) from None
    docs = [Document(source, i, line, body)
            for i, (line, body) in enumerate(loaded, start=1) if body is not None]
    # A last empty document is a file that ends with '---' (helm template writes them):
    # a separator, not a missing job.
    warnings = [f"{source}:{line}: doc {i} is empty and was skipped (as kubectl skips it): "
                "remove the extra '---', or fill it in"
                for i, (line, body) in enumerate(loaded[:-1], start=1) if body is None]
    return docs, warnings


def _yaml_message(source: str, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark else source
    if isinstance(err, bounded_yaml.BoundError):
        return f"{where}: {err.problem}"
    problem = getattr(err, "problem", None) or str(err)
    # YAML's own messages quote tags, anchors and keys, where a pasted token may be.
    return f"{where}: not valid YAML: {redact.scrub(problem)}"


def _read(source: str) -> str:
    """The text of `source`, at most bounded_yaml.MAX_INPUT_BYTES of it (read that and one
    byte more, so that /dev/zero or a huge file is refused without being read whole)."""
    limit = bounded_yaml.MAX_INPUT_BYTES
    try:
        if source == "-":
            stdin = getattr(sys.stdin, "buffer", None)  # a test's StringIO has none
            data = stdin.read(limit + 1) if stdin else sys.stdin.read(limit + 1).encode()
        else:
            with Path(source).open("rb") as f:
                data = f.read(limit + 1)
    except FileNotFoundError:
        raise DocumentError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise DocumentError(f"{source}: is a directory, expected a YAML file") from None
    except OSError as err:
        raise DocumentError(f"{source}: cannot read: {err.strerror}") from None
    if len(data) > limit:
        raise DocumentError(f"{source}: larger than {limit} bytes, the most a FineTuneJob "
                            "file may be (a job is a few KiB; the API server takes at most "
                            "1.5 MiB): split it, or remove what is not the job")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DocumentError(f"{source}: not UTF-8 text (byte {err.start})") from None


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
