"""bench/workspace.py: the model, tokenizer and data both recipes load."""

from __future__ import annotations

import pytest

from bench import workspace

pytestmark = [pytest.mark.slow]


def test_workspace_holds_what_both_recipes_load(tiny_workspace: workspace.Workspace) -> None:
    assert (tiny_workspace.model / "config.json").is_file()
    assert (tiny_workspace.tokenizer / "tokenizer.json").is_file()
    assert len(tiny_workspace.data.read_text().splitlines()) == 40
    assert tiny_workspace.parameters > 0 and tiny_workspace.real_tokens_per_row > 0
