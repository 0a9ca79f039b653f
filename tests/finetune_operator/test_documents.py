"""documents: a file is read up to a bound and refused past it, naming the limit; empty
documents are told with their number and line; YAML's own errors never quote a token."""

from __future__ import annotations

import io
import random

import pytest
from finetune_operator import bounded_yaml, documents
from finetune_operator.documents import DocumentError, read_documents, read_file

from tests.support.ftj_samples import VALID

LIMIT = bounded_yaml.MAX_INPUT_BYTES
TOKEN = "hf_" + "Ab3" * 12


def padded(size: int) -> str:
    """VALID, padded with a comment to exactly `size` bytes."""
    pad = size - len(VALID.encode()) - 3
    return VALID + "#" + "x" * pad + "\n\n"


@pytest.mark.parametrize("size", [len(VALID) + 10, LIMIT // 2, LIMIT - 1, LIMIT])
def test_a_file_up_to_the_limit_is_read(tmp_path, size):
    path = tmp_path / "job.yaml"
    path.write_text(padded(size), encoding="utf-8")
    assert path.stat().st_size == size
    assert len(read_documents(str(path))) == 1


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT + 2, 2 * LIMIT, 20 * LIMIT])
def test_a_file_past_the_limit_is_refused_naming_it(tmp_path, size):
    path = tmp_path / "job.yaml"
    path.write_text(padded(size), encoding="utf-8")
    with pytest.raises(DocumentError, match=f"{path}: larger than {LIMIT} bytes"):
        read_documents(str(path))


def test_an_endless_file_is_refused_without_reading_it_whole():
    with pytest.raises(DocumentError, match=f"/dev/zero: larger than {LIMIT} bytes"):
        read_documents("/dev/zero")


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_stdin_is_bounded_too(monkeypatch, size):
    class Stdin(io.StringIO):
        buffer = io.BytesIO(padded(size).encode())

    monkeypatch.setattr("sys.stdin", Stdin())
    if size <= LIMIT:
        assert len(read_documents("-")) == 1
    else:
        with pytest.raises(DocumentError, match=f"-: larger than {LIMIT}"):
            read_documents("-")


def _empty_cases() -> list[tuple[str, list[int]]]:
    """Files of jobs and empty documents in a random order, and the empty ones' numbers
    (a last empty one is a trailing '---': not told)."""
    rng = random.Random(4)
    cases = []
    for _ in range(12):
        kinds = [rng.choice(["job", "empty", "empty-comment"]) for _ in range(rng.randint(2, 6))]
        parts = [VALID if k == "job" else "# nothing here\n" if k == "empty-comment" else ""
                 for k in kinds]
        told = [i for i, k in enumerate(kinds[:-1], start=1) if k != "job"]
        cases.append(("---\n" + "---\n".join(parts), told))
    return cases


@pytest.mark.parametrize(("text", "told"), _empty_cases())
def test_each_empty_document_is_told_with_its_number_and_line(tmp_path, text, told):
    path = tmp_path / "jobs.yaml"
    path.write_text(text, encoding="utf-8")
    docs, warnings = read_file(str(path))
    assert [w.split(": doc ")[1].split(" ")[0] for w in warnings] == [str(i) for i in told]
    lines = text.splitlines()
    for warning in warnings:
        line = int(warning.removeprefix(f"{path}:").split(":")[0])
        assert lines[line - 1].startswith(("---", "#")) or lines[line - 1] == ""
        assert "kubectl skips it" in warning
    assert all(doc.body for doc in docs)


def test_a_trailing_separator_is_not_told(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(VALID + "---\n", encoding="utf-8")
    assert read_file(str(path))[1] == []


@pytest.mark.parametrize("text", [
    f"spec: !{TOKEN} x\n",             # a token as a tag
    f"spec: *{TOKEN}\n",               # as an undefined alias
    f"a: &{TOKEN} 1\nb: &{TOKEN} 2\nc: [*{TOKEN}, *{TOKEN}]\n{TOKEN}: 1\n{TOKEN}: 2\n",
    f"{TOKEN}: 1\n{TOKEN}: 2\n",       # as a key given twice
    f"x: {{{TOKEN}: [1, 2}}\n",         # in a syntax error
])
def test_yaml_errors_never_quote_a_token(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DocumentError) as err:
        read_documents(str(path))
    assert TOKEN not in str(err.value)
    assert str(err.value).startswith(f"{path}:")


def test_a_bound_names_the_file_and_line(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("spec:\n  x: " + "[" * 100 + "]" * 100 + "\n", encoding="utf-8")
    with pytest.raises(DocumentError, match=f"^{path}:2: nested more than "
                                            f"{bounded_yaml.MAX_DEPTH} levels deep"):
        documents.read_documents(str(path))
