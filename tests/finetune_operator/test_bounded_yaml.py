"""bounded_yaml: nesting, aliases and their expansion are bounded around their limits, and a
key given twice is refused at its line; what is inside the bounds loads as PyYAML loads it."""

from __future__ import annotations

import random
import sys
import time

import pytest
import yaml
from finetune_operator import bounded_yaml
from finetune_operator.bounded_yaml import MAX_ALIASES, MAX_DEPTH, MAX_NODES, BoundError


def load(text: str) -> list:
    return [body for _, body in bounded_yaml.load_all(text)]


def expanded_nodes(value: object) -> int:
    """What a loaded value holds, every alias counted where it is used (the oracle)."""
    if isinstance(value, dict):
        return 1 + sum(expanded_nodes(k) + expanded_nodes(v) for k, v in value.items())
    if isinstance(value, list):
        return 1 + sum(expanded_nodes(v) for v in value)
    return 1


@pytest.mark.parametrize("levels", [1, 2, MAX_DEPTH // 2, MAX_DEPTH - 1, MAX_DEPTH,
                                    MAX_DEPTH + 1, MAX_DEPTH + 5, 10 * MAX_DEPTH])
@pytest.mark.parametrize("style", ["flow-lists", "block-mappings"])
def test_nesting_is_bounded_at_max_depth(levels, style):
    if style == "flow-lists":  # `levels` lists, the innermost empty
        text, depth = "[" * levels + "]" * levels, levels
    else:  # `levels` mappings and the scalar at the bottom
        text = "".join(f"{'  ' * i}k{i}:\n" for i in range(levels)) + "  " * levels + "x\n"
        depth = levels + 1
    if depth <= MAX_DEPTH:
        assert load(text) == [yaml.safe_load(text)]
    else:
        with pytest.raises(BoundError, match=f"more than {MAX_DEPTH} levels"):
            load(text)


@pytest.mark.parametrize("aliases", [0, 1, MAX_ALIASES - 1, MAX_ALIASES, MAX_ALIASES + 1,
                                     3 * MAX_ALIASES])
def test_aliases_are_bounded_at_max_aliases(aliases):
    text = "base: &b x\n" + "".join(f"k{i}: *b\n" for i in range(aliases))
    if aliases <= MAX_ALIASES:
        assert load(text) == [yaml.safe_load(text)]
    else:
        with pytest.raises(BoundError, match=f"more than {MAX_ALIASES} aliases") as err:
            load(text)
        assert err.value.problem_mark.line + 1 == MAX_ALIASES + 2  # the first one too many


def laughs(width: int, levels: int, base: int) -> str:
    """A billion-laughs document: `base` scalars, then `levels` lists of `width` aliases of
    the list before."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * base)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _expansion_cases() -> list[tuple[int, int, int]]:
    """(width, levels, base) whose expansion lies near MAX_NODES, on both sides."""
    rng = random.Random(15)
    cases = []
    while len(cases) < 24:
        width, levels = rng.randint(2, 12), rng.randint(1, 4)
        if width * levels > MAX_ALIASES:
            continue
        # The largest level dominates: about base * width**levels nodes.
        base = max(1, int(MAX_NODES * rng.uniform(0.5, 1.5) / width**levels))
        if base <= 5000:
            cases.append((width, levels, base))
    return cases


@pytest.mark.parametrize(("width", "levels", "base"), _expansion_cases())
def test_alias_expansion_is_bounded_at_max_nodes(width, levels, base):
    text = laughs(width, levels, base)
    expected = yaml.safe_load(text)  # small enough for the oracle: at most ~1.5 MAX_NODES
    if expanded_nodes(expected) <= MAX_NODES:
        assert load(text) == [expected]
    else:
        with pytest.raises(BoundError, match=f"more than {MAX_NODES} values"):
            load(text)


def test_a_billion_laughs_is_refused_at_once():
    started = time.monotonic()
    with pytest.raises(BoundError, match="expands to more than"):
        load(laughs(9, 9, 9))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n"])
def test_a_recursive_alias_is_refused(text):
    with pytest.raises(BoundError, match="cycle"):
        load(text)


def _duplicate_cases() -> list[tuple[str, int, str]]:
    """(document, line of the second key, key): a mapping nested at a random depth, with a
    random key given twice at a random place."""
    rng = random.Random(6)
    cases = []
    for _ in range(20):
        depth, size = rng.randint(0, 4), rng.randint(2, 6)
        keys = [f"key{i}" for i in range(size)]
        twice = rng.choice(keys)
        keys.insert(rng.randint(keys.index(twice) + 1, size), twice)
        head = [f"{'  ' * i}level{i}:" for i in range(depth)]
        body = [f"{'  ' * depth}{k}: {rng.choice(['1', 'x', '[1, 2]', '{a: b}'])}" for k in keys]
        line = depth + 1 + [i for i, k in enumerate(keys) if k == twice][1]
        cases.append(("\n".join(head + body) + "\n", line, twice))
    return cases


@pytest.mark.parametrize(("text", "line", "key"), _duplicate_cases())
def test_a_duplicate_key_is_refused_at_its_line(text, line, key):
    with pytest.raises(BoundError, match=f"key '{key}' is given twice") as err:
        load(text)
    assert err.value.problem_mark.line + 1 == line


@pytest.mark.parametrize("text", ["1: a\n'1': b\n", "a: 1\nb: 2\n", ("base: &b {x: 1}\n"
                                  "job: {<<: *b, x: 2}\n"), "- {a: 1}\n- {a: 2}\n"])
def test_distinct_keys_and_merge_overrides_are_not_duplicates(text):
    assert load(text) == [yaml.safe_load(text)]


def test_documents_come_with_their_lines():
    text = "a: 1\n---\n# a comment\nb: 2\n---\n---\nc: 3\n"
    assert list(bounded_yaml.load_all(text)) == [(1, {"a": 1}), (4, {"b": 2}), (6, None),
                                                 (7, {"c": 3})]


def test_the_expansion_cases_lie_on_both_sides_of_the_bound():
    sizes = [expanded_nodes(yaml.safe_load(laughs(*case))) for case in _expansion_cases()]
    assert min(sizes) <= MAX_NODES < max(sizes)


READABLE_DIGITS = sys.get_int_max_str_digits()  # 4300 by default


@pytest.mark.parametrize("digits", [1, 101, READABLE_DIGITS - 1, READABLE_DIGITS,
                                    READABLE_DIGITS + 1, 5000, 100_000])
@pytest.mark.parametrize("sign", ["", "-"])
def test_an_integer_python_cannot_read_is_refused_at_its_line(digits, sign):
    """Python refuses int() of more than 4300 digits with a ValueError, not a YAML error:
    that was a traceback of `finetune validate` before this bound. A smaller huge number is
    read; its field's bound refuses it."""
    text = f"a: 1\nb: {sign}{'7' * digits}\n"
    if digits <= READABLE_DIGITS:
        assert list(bounded_yaml.load_all(text)) == [(1, {"a": 1, "b": int(sign + "7" * digits)})]
        return
    with pytest.raises(BoundError) as err:
        list(bounded_yaml.load_all(text))
    assert err.value.problem_mark.line + 1 == 2
    assert f"{digits} digits" in str(err.value)
