"""api: the types a user's job is read with. Hub ids are what huggingface_hub's
validate_repo_id takes (ASCII), the same in the pattern and CEL rule the CRD carries."""

from __future__ import annotations

import random
import re

import celpy
import pytest
from finetune_contract.api import HF_ID_CEL, HF_ID_PATTERN, HF_PART_MAX, DataSource, ModelSpec
from huggingface_hub.utils import HFValidationError, validate_repo_id
from pydantic import ValidationError

_PROGRAM = celpy.Environment().program(celpy.Environment().compile(HF_ID_CEL))


def _ids() -> list[str]:
    """Random ids over the characters that matter (word characters, '-', '.', '/', a
    space, a newline), short ones dense, and long ones around the Hub's length limit."""
    rng = random.Random(96)
    ids = {"".join(rng.choice("aZ0_-./ \n") for _ in range(rng.randint(1, 7)))
           for _ in range(1500)}
    for _ in range(40):
        owner = "o" * rng.randint(HF_PART_MAX - 2, HF_PART_MAX + 2)
        name = "n" * rng.randint(HF_PART_MAX - 2, HF_PART_MAX + 2)
        ids |= {name, f"{owner}/{name}", f"{owner}/a.git", f"a-{name}.git"}
    ids |= {"evil..repo", "a--b", "meta-llama/Llama-3.1-8B", "gpt2", "x.git", "a.-.b"}
    return sorted(ids)


def hub_accepts(repo_id: str) -> bool:
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def server_accepts(repo_id: str) -> bool:
    """The CRD's pattern (RE2: '$' is the end of the text) and its CEL rule."""
    pattern = re.sub(r"\$$", r"\\Z", HF_ID_PATTERN)
    return bool(re.search(pattern, repo_id)) and bool(_PROGRAM.evaluate(
        {"self": celpy.json_to_cel(repo_id)}))


def accepts(model: type, field: str, repo_id: str) -> bool:
    try:
        model.model_validate({field: repo_id})
    except ValidationError as err:
        return all(e["loc"] != (field,) for e in err.errors())
    return True


@pytest.mark.parametrize("repo_id", _ids())
def test_hub_ids_are_what_the_hub_takes_in_the_cli_and_the_crd(repo_id):
    expected = hub_accepts(repo_id)
    assert accepts(ModelSpec, "name", repo_id) == expected
    assert accepts(DataSource, "hf", repo_id) == expected
    assert server_accepts(repo_id) == expected
