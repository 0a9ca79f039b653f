"""One thing wrong with a FineTuneJob, at its field path, and pydantic's errors rendered as
such problems (the field in the camelCase the user wrote, what is wrong, what was given, a
did-you-mean). What validation, the API-server rules and the tenant policy report. It
imports only the contract and redact, so that every checker can use it without importing
the others."""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from typing import Any

from finetune_contract.api import HF_ID_HINT, HF_ID_PATTERN, HF_ID_RULE, FineTuneJob
from pydantic import BaseModel, ValidationError

from finetune_operator import redact
from finetune_operator.caps import shorten

# The longest field path a problem names (a path holds user map keys).
MAX_PATH = 256


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a FineTuneJob, at a field path like spec.training.learningRate."""

    path: str
    message: str

    def __post_init__(self) -> None:
        # The last guard: whatever a message quotes, a token-shaped word never leaves here.
        # And none is longer than a status message may be (a megabyte key or value, quoted
        # whole by some check, would otherwise travel into status and Events).
        object.__setattr__(self, "path", shorten(redact.scrub(self.path), MAX_PATH))
        object.__setattr__(self, "message", shorten(redact.scrub(self.message)))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def pydantic_problems(err: ValidationError, model: type[BaseModel] = FineTuneJob
                      ) -> list[Problem]:
    """Turn pydantic's errors into one readable Problem each; `model` is what was parsed,
    so that an unknown field can be told the known ones closest to it."""
    problems = []
    for e in err.errors(include_url=False):
        loc = [redact.key(x) for x in e["loc"] if not _is_union_tag(x)]
        path = ".".join(_dotted(loc))
        message = _message(e, path) + _did_you_mean(e, model)
        problems.append(Problem(path, message))
    return dedupe(problems)


def _did_you_mean(e: dict[str, Any], model: type[BaseModel]) -> str:
    """' (did you mean X?)' for a misspelled field or enum value, else ''."""
    if e["type"] == "extra_forbidden":
        known = _wire_names(_model_at(model, e["loc"][:-1]))
        given = str(e["loc"][-1])
    elif e["type"] == "literal_error" and isinstance(e.get("input"), str):
        known = re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", "")))
        given = e["input"]
    else:
        return ""
    close = _closest(given, known)
    return f" (did you mean {close}?)" if close else ""


def _closest(given: str, known: list[str]) -> str | None:
    # Compared case-blind, so that learningrate and learning_rate find learningRate.
    folded = {name.lower().replace("_", ""): name for name in known}
    close = difflib.get_close_matches(given.lower().replace("_", ""), folded, n=1, cutoff=0.6)
    return folded[close[0]] if close else None


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class at a location of pydantic's (wire names, list indexes)."""
    for part in loc:
        if model is None or isinstance(part, int) or _is_union_tag(part):
            continue
        field = next((f for name, f in model.model_fields.items()
                      if part in (f.alias, name)), None)
        model = _model_in(field.annotation) if field else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation like `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found:
            return found
    return None


def _wire_names(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the union member ("bool", "literal['auto']") into the location
    return isinstance(part, str) and (part in {"bool", "int", "str", "float"}
                                      or part.startswith(("literal[", "function-")))


def _dotted(loc: list[str]) -> list[str]:
    out: list[str] = []
    for part in loc:
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}[{part}]"
        else:
            out.append(part)
    return out


def _message(e: dict[str, Any], path: str) -> str:
    kind, ctx, given = e["type"], e.get("ctx") or {}, e.get("input")
    got = f" (got {show_value(given, path)})"
    simple = {
        "greater_than": f"must be > {_num(ctx.get('gt'))}{got}",
        "greater_than_equal": f"must be >= {_num(ctx.get('ge'))}{got}",
        "less_than": f"must be < {_num(ctx.get('lt'))}{got}",
        "less_than_equal": f"must be <= {_num(ctx.get('le'))}{got}",
        "missing": "is required",
        "extra_forbidden": "unknown field: check its spelling and indentation (kubectl "
        "explain finetunejob.spec shows every field)",
        "int_parsing": f"must be an integer{got}",
        "int_type": f"must be an integer{got}",
        "int_from_float": f"must be a whole number{got}",
        "float_parsing": f"must be a number{got}",
        "float_type": f"must be a number{got}",
        "bool_parsing": f"must be true or false{got}",
        "bool_type": f"must be true or false{got}",
        "string_type": f"must be a string{got}",
        "dict_type": f"must be a mapping{got}",
        "model_type": f"must be a mapping{got}",
        "list_type": f"must be a list{got}",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters "
        f"(got {len(given) if isinstance(given, str) else '?'})",
        "too_long": f"must have at most {ctx.get('max_length')} items",
        "literal_error": f"must be one of {ctx.get('expected')}{got}",
        "finite_number": f"must be a finite number{got}",
    }
    if kind in simple:
        return simple[kind]
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == HF_ID_PATTERN:
        return f"{HF_ID_RULE}{got}: {HF_ID_HINT}"
    if kind == "value_error":
        return str(e["msg"]).removeprefix("Value error, ")
    return f"{e['msg']}{got}"


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def show_value(value: Any, path: str = "") -> str:
    return redact.show(value, path)


def kind_of(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "nothing"}.get(type(value), "a value")


def dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[tuple[str, str], Problem] = {}
    for p in problems:
        seen.setdefault((p.path, p.message), p)
    # A union reports one error per member; keep the first per path.
    by_path: dict[str, Problem] = {}
    for p in seen.values():
        by_path.setdefault(p.path, p)
    return list(by_path.values())


# --------------------------------------------------------------------------- semantics
