"""The operator's memo of parsed specs: a hit on the same content, a miss on new content,
bounded with the least recently used evicted first."""

from __future__ import annotations

from finetune_operator.controller.caches import ParseCache


def test_parse_cache_parses_a_key_once_and_a_new_key_again():
    calls: list[str] = []
    cache: ParseCache[int] = ParseCache(size=8)

    def parse(text: str) -> int:
        calls.append(text)
        return len(text)

    assert cache.get("abc", parse) == 3
    assert cache.get("abc", parse) == 3
    assert calls == ["abc"]
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.get("abcd", parse) == 4
    assert calls == ["abc", "abcd"]
    assert (cache.hits, cache.misses) == (1, 2)


def test_parse_cache_is_bounded_and_evicts_the_least_recently_used():
    cache: ParseCache[str] = ParseCache(size=2)
    cache.get("a", str.upper)
    cache.get("b", str.upper)
    cache.get("a", str.upper)  # a is now the most recent
    cache.get("c", str.upper)  # evicts b
    assert len(cache) == 2
    misses = cache.misses
    cache.get("a", str.upper)
    assert cache.misses == misses
    cache.get("b", str.upper)
    assert cache.misses == misses + 1
