"""The test tree mirrors the source tree (docs/testing.md): tests/<package>/<path>/test_<module>.py
tests <package>/<path>/<module>.py, and test_<module>_<aspect>.py one aspect of it. A package's
__init__.py is tested in test_init.py, a __main__.py in test_main.py. Kinds of test (slow,
distributed, reliability, e2e, cluster) are markers, not folders.

Outside the mirror: this file and test_imports.py (the project as a whole), support/ (shared
helpers), cases/ (data), chart/ (the Helm chart and the images) and e2e/ (a kind cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT

TESTS = ROOT / "tests"
SOURCES = {
    "finetune_contract": ROOT / "operator" / "finetune_contract",
    "finetune_operator": ROOT / "operator" / "finetune_operator",
    "finetune_trainer": ROOT / "trainer_image" / "finetune_trainer",
    "bench": ROOT / "bench",
    "examples": ROOT / "examples",
}
OUTSIDE = {"support", "cases", "chart", "e2e"}
SPECIAL = {"init": ("__init__",), "main": ("main", "__main__")}


def source_of(test: Path) -> Path | None:
    """The source module a mirrored test module tests, or None."""
    package, *folders = test.relative_to(TESTS).parent.parts
    folder = SOURCES[package].joinpath(*folders)
    words = test.stem.removeprefix("test_").split("_")
    # The longest name that is a module: test_main_faults -> main.py, test_plan_cmd -> plan_cmd.
    for end in range(len(words), 0, -1):
        name = "_".join(words[:end])
        for candidate in SPECIAL.get(name, (name,)):
            if (folder / f"{candidate}.py").is_file():
                return folder / f"{candidate}.py"
    return None


def mirrored_tests() -> list[Path]:
    return sorted(p for package in SOURCES if (TESTS / package).is_dir()
                  for p in (TESTS / package).rglob("test_*.py"))


def test_every_folder_of_tests_mirrors_a_package_or_is_named_outside():
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(SOURCES) | OUTSIDE, folders - set(SOURCES) - OUTSIDE


def test_no_test_module_sits_at_the_top_but_the_project_wide_ones():
    top = {p.name for p in TESTS.glob("test_*.py")}
    assert top == {"test_imports.py", "test_tree.py"}


@pytest.mark.parametrize("test", mirrored_tests(), ids=lambda p: str(p.relative_to(TESTS)))
def test_each_test_module_sits_at_the_mirrored_path_of_its_module(test):
    assert source_of(test) is not None, f"{test.relative_to(TESTS)} tests no module at its path"


def test_the_mirror_is_read_as_documented():
    operator = TESTS / "finetune_operator"
    assert source_of(operator / "planner" / "test_memory.py") == \
        SOURCES["finetune_operator"] / "planner" / "memory.py"
    assert source_of(operator / "test_main_faults.py") == SOURCES["finetune_operator"] / "main.py"
    assert source_of(TESTS / "finetune_trainer" / "test_main.py") == \
        SOURCES["finetune_trainer"] / "__main__.py"
    assert source_of(operator / "planner" / "test_init.py") == \
        SOURCES["finetune_operator"] / "planner" / "__init__.py"
    assert source_of(operator / "test_nothing_here.py") is None
