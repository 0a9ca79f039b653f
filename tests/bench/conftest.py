"""Each bench section's core on the tiniest inputs, so the bench cannot rot unnoticed: one test
module per bench module. Structure and the planner's agreement with what is measured, never
timings: speed is read from docs/benchmarks.md, not asserted."""

from __future__ import annotations

import pytest

from bench import workspace

TINY = {**workspace.MODEL_20M, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> workspace.Workspace:
    return workspace.prepare(tmp_path_factory.mktemp("ws"), model_config=TINY, conversations=40)
