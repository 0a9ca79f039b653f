"""YAML loading with bounds, for files a user (or anyone) hands the CLI.

A FineTuneJob is a few KiB of plain mappings. YAML can say far more than that in few bytes:
anchors and aliases share a node, so ten aliases of ten aliases of ... expand to gigabytes
once the document is turned into dicts and lists (billion laughs), nesting can outrun the
recursion of the composer, and a file can be any size (/dev/zero). Each is bounded here, and
a mapping that gives a key twice is refused instead of silently keeping the last value.

The bounds are the constants below, and only here; a message names the line and the bound.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.cyaml import CParser
from yaml.events import AliasEvent
from yaml.nodes import CollectionNode, MappingNode, Node
from yaml.resolver import Resolver

from finetune_operator.redact import key as shown_key

# Bytes read from a file. The API server refuses an object over 1.5 MiB (etcd's request
# limit); a FineTuneJob is far smaller, so no valid job is refused by this.
MAX_INPUT_BYTES = 1536 * 1024
# Collections nested in one another, aliases expanded (a job is about 6 deep).
MAX_DEPTH = 64
# Alias nodes (*name) in one document.
MAX_ALIASES = 256
# Nodes of one document once its aliases are expanded: what the dicts and lists hold.
MAX_NODES = 200_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class BoundError(yaml.MarkedYAMLError):
    """A document past one of the bounds (or a key given twice); `problem` says which."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _Loader(Composer, CParser, SafeConstructor, Resolver):
    """libyaml's parser (fast), and PyYAML's composer, which this counts in, and safe
    constructor (plain data only)."""

    def __init__(self, text: str) -> None:
        CParser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._aliases = 0
        # Per composed node (by id: nodes live as long as their document): its size with
        # aliases expanded, and its height, so that an alias costs what it expands to.
        self._sizes: dict[int, tuple[int, int]] = {}

    def compose_document(self) -> Node:
        self._aliases = 0
        self._sizes = {}
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            return self._compose_alias(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise BoundError(f"nested more than {MAX_DEPTH} levels deep: a FineTuneJob "
                                 "is a few levels of mappings; flatten the document", mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._record(node)
        return node

    def _compose_alias(self, parent: Node | None, index: Any) -> Node:
        mark = self.peek_event().start_mark
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise BoundError(f"more than {MAX_ALIASES} aliases (*name) in one document: "
                             "write the values out, or use fewer anchors", mark)
        node = super().compose_node(parent, index)
        if id(node) not in self._sizes:
            raise BoundError("an alias refers to a node that contains it (a cycle): "
                             "a FineTuneJob cannot be recursive", mark)
        height = self._sizes[id(node)][1]
        if self._depth + height > MAX_DEPTH:
            raise BoundError(f"this alias nests the document more than {MAX_DEPTH} levels "
                             "deep once expanded: write the value out", mark)
        return node

    def _record(self, node: Node) -> None:
        if not isinstance(node, CollectionNode):
            self._sizes[id(node)] = (1, 0)
            return
        children = ([n for pair in node.value for n in pair] if isinstance(node, MappingNode)
                    else node.value)
        sizes = [self._sizes.get(id(child), (1, 0)) for child in children]
        size = 1 + sum(s for s, _ in sizes)
        if size > MAX_NODES:
            raise BoundError(f"expands to more than {MAX_NODES} values once its aliases "
                             "are expanded: write the values out, or use fewer aliases",
                             node.start_mark)
        self._sizes[id(node)] = (size, 1 + max((h for _, h in sizes), default=0))

    def construct_yaml_int(self, node: Node) -> int:
        # Python refuses to read an integer of more digits than this (a ValueError, not a
        # YAML error). A smaller huge number is read, and its field's bound names it.
        limit = sys.get_int_max_str_digits()
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > limit:
            raise BoundError(f"is an integer of {digits} digits (at most {limit}): no field "
                             "takes a number that large", node.start_mark)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            self._refuse_duplicate_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _refuse_duplicate_keys(self, node: MappingNode) -> None:
        # The node's own keys only: a merge (<<: *base) is meant to be overridden.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the constructor refuses it next
            if duplicate:
                raise BoundError(f"key {shown_key(key)!r} is given twice in this mapping "
                                 "(the first value would be silently lost): keep one",
                                 key_node.start_mark)
            seen.add(key)


# PyYAML looks constructors up by tag in a table, not by method: the bounded one goes there.
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def load_all(text: str) -> Iterator[tuple[int, Any]]:
    """(line, data) for each document of `text`, its line numbered from 1. Raises
    yaml.YAMLError: BoundError for a bound or a duplicate key, with the line."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            yield node.start_mark.line + 1, loader.construct_document(node)
    finally:
        loader.dispose()
