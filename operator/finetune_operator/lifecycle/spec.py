"""The spec of a FineTuneJob as the lifecycle uses it: with the operator's defaults, validated
(without planning), the copy the job started with, and what changed since.

Parsing is most of a reconcile's CPU and specs rarely change, so both parses go through memos
the controller owns and passes in (`SpecCaches`); without them every call parses again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import yaml
from finetune_contract.api import FineTuneJobSpec, ResourcesSpec
from finetune_contract.trainer_config import TrainerConfig
from pydantic import ValidationError

from finetune_operator.settings import Settings
from finetune_operator.validation import validate_spec

T = TypeVar("T")
Validated = tuple[FineTuneJobSpec | None, list[str]]  # the spec, or the problems


class Memo(Protocol[T]):
    """A memo of a pure parse, keyed by the text parsed (controller/caches.py: ParseCache)."""

    def get(self, key: str, parse: Callable[[str], T]) -> T: ...

    def seed(self, key: str, value: T) -> None: ...


class NoMemo:
    """Parses every time: for callers that keep no caches (tests, one-off decisions)."""

    def get(self, key: str, parse: Callable[[str], Any]) -> Any:
        return parse(key)

    def seed(self, key: str, value: Any) -> None:
        pass


@dataclass(frozen=True)
class SpecCaches:
    """The memos of one operator process: the spec each job started with (keyed by its
    ConfigMap's text) and each job's validated current spec (keyed by its canonical JSON)."""

    started: Memo[FineTuneJobSpec | None] = field(default_factory=NoMemo)
    current: Memo[Validated] = field(default_factory=NoMemo)


def with_defaults(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The stored spec with the operator's default GPU where the job names none."""
    if not settings.default_gpu or not isinstance(spec, dict):
        return spec
    resources = spec.get("resources")
    if resources is None:
        return {**spec, "resources": {"gpu": settings.default_gpu}}
    if isinstance(resources, dict) and "gpu" not in resources:
        return {**spec, "resources": {**resources, "gpu": settings.default_gpu}}
    return spec


def with_node_limit(spec: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The spec with maxNodes at most `limit` (status.nodeLimit, after a shrink)."""
    if limit is None or not isinstance(spec, dict):
        return spec
    resources = spec.get("resources")
    resources = resources if isinstance(resources, dict) else {}
    default = ResourcesSpec.model_fields["max_nodes"].default
    current = resources.get("maxNodes", default)
    if not isinstance(current, int) or current <= limit:
        return spec
    return {**spec, "resources": {**resources, "maxNodes": limit}}


def validated(name: str, spec: Any, caches: SpecCaches) -> Validated:
    """validate_spec without planning, memoized on the spec's canonical JSON."""
    try:
        key = json.dumps([name, spec], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON (only in hand-made tests): no memo
        return _validate(name, spec)
    return caches.current.get(key, lambda _: _validate(name, spec))


def _validate(name: str, spec: Any) -> Validated:
    valid, problems = validate_spec(spec, name, plan=False)
    return valid, [str(p) for p in problems]


def started(config_text: str | None, caches: SpecCaches) -> FineTuneJobSpec | None:
    """The spec the job started with, from its ConfigMap's trainer config; None without a
    ConfigMap or when its text does not parse."""
    if config_text is None:
        return None
    return caches.started.get(config_text, parse_started)


def parse_started(text: str) -> FineTuneJobSpec | None:
    try:
        return TrainerConfig.parse(text or "").spec
    except (ValidationError, yaml.YAMLError):
        return None  # a damaged ConfigMap: the caller falls back to the current spec


def changed_fields(started: FineTuneJobSpec, current: FineTuneJobSpec) -> list[str]:
    """Field paths (spec.x.y) that differ, runPolicy excluded: it may change while running."""
    before = started.to_wire()
    after = current.to_wire()
    before.pop("runPolicy", None)
    after.pop("runPolicy", None)
    return _diff_paths(before, after, "spec")


def _diff_paths(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff_paths(a.get(key), b.get(key), f"{path}.{key}")
        return out
    return [] if a == b else [path]
