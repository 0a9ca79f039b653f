"""The bad-data corpus (tests/cases/bad-data) and its manifest, shared by the tests."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT

CORPUS = ROOT / "tests" / "cases" / "bad-data"
MANIFEST = yaml.safe_load((CORPUS / "manifest.yaml").read_text())["cases"]


def assert_counted(data: dict, expected: dict[str, int]) -> None:
    """`data` (training_summary.json's data) skipped exactly `expected`, and lost nothing."""
    skipped = data["skipped"]
    for fragment, count in expected.items():
        matching = sum(n for reason, n in skipped.items() if fragment in reason)
        assert matching == count, (fragment, skipped)
    assert data["skippedTotal"] == sum(skipped.values()) == sum(expected.values()), skipped
    read = sum(data["read"].values())
    assert read == (data["trainRows"] + data["evalRows"] + data["skippedTotal"]
                    + data["duplicatesDropped"]), data
