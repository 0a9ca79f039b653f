"""Shared test setup: offline Hugging Face, caches inside the project, the CI skip policy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "huggingface"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """Path of a command-line tool a test needs.

    Outside CI a missing tool skips the test; in CI it fails it: `make test` installs every
    tool, so a missing one there is a broken setup, never a reason to skip.
    """
    venv_bin = ROOT / ".venv" / "bin" / name
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} not found: run `make tools` (make test installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_container_engine() -> None:
    """The only allowed skip in CI: no container engine on these machines."""
    for engine in ("docker", "podman"):
        if shutil.which(engine) and os.system(f"{engine} info >/dev/null 2>&1") == 0:
            return
    pytest.skip("needs a running container engine (docker or podman) and kind")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
