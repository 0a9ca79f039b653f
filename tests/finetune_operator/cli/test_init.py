"""The `finetune` entry point (cli/__init__.py): its version flag."""

from __future__ import annotations

import tomllib

import pytest
from finetune_operator.cli import main

from tests.conftest import ROOT


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"finetune {version}"
