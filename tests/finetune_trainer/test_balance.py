"""Rows of each micro-step dealt over the ranks by token count (finetune_trainer/balance.py):
same rows per step as the default sampler, token counts within one row of each other, and the
layout accelerate's per-rank sharding turns into the intended per-rank batches."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from accelerate.data_loader import BatchSamplerShard, SeedableRandomSampler
from finetune_trainer.balance import BalancedSampler, balanced_order, deal_rows
from torch.utils.data import BatchSampler


def _long_tailed(rng: random.Random, count: int) -> list[int]:
    return [max(1, int(20 * rng.paretovariate(1.3))) for _ in range(count)]


@pytest.mark.parametrize("ranks,rows_per_rank", [(2, 1), (2, 8), (3, 5), (4, 2), (8, 4)])
def test_deal_rows_keeps_every_row_once_and_balances_within_one_row(ranks, rows_per_rank):
    rng = random.Random(ranks * 100 + rows_per_rank)
    for _ in range(300):
        lengths = _long_tailed(rng, ranks * rows_per_rank)
        shares = deal_rows(lengths, ranks, rows_per_rank)
        assert sorted(i for share in shares for i in share) == list(range(len(lengths)))
        assert [len(share) for share in shares] == [rows_per_rank] * ranks
        tokens = [sum(lengths[i] for i in share) for share in shares]
        assert max(tokens) - min(tokens) <= max(lengths)


def test_deal_rows_evens_out_a_long_tail_the_shuffled_order_left_lopsided():
    lengths = [400, 380, 30, 20, 25, 35, 15, 40]  # in order: rank 0 would get 830, rank 1 115
    shares = deal_rows(lengths, 2, 4)
    tokens = sorted(sum(lengths[i] for i in share) for share in shares)
    assert tokens == [470, 475]  # the two long rows on different ranks


def test_deal_rows_refuses_a_count_that_does_not_fill_the_ranks():
    with pytest.raises(ValueError, match="5 rows cannot be dealt as 2 x 3"):
        deal_rows([1, 2, 3, 4, 5], 2, 3)


def test_balanced_order_moves_rows_only_inside_their_window():
    rng = random.Random(3)
    lengths = _long_tailed(rng, 53)
    order = list(range(53))
    rng.shuffle(order)
    out = balanced_order(order, lengths, ranks=2, micro_batch=4)
    for start in range(0, 48, 8):
        window = out[start:start + 8]
        assert sorted(window) == sorted(order[start:start + 8])
        halves = [sum(lengths[i] for i in window[:4]), sum(lengths[i] for i in window[4:])]
        assert abs(halves[0] - halves[1]) <= max(lengths[i] for i in window)
    assert out[48:] == order[48:]  # the partial last window is left alone


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_sampler_trains_each_step_on_the_default_samplers_rows(epoch):
    """Same seed and epoch as accelerate's SeedableRandomSampler: the same rows per micro-step
    window (so per optimizer step), only their rank changes."""
    lengths = _long_tailed(random.Random(epoch), 100)
    default = SeedableRandomSampler(range(100), data_seed=42)
    default.set_epoch(epoch)
    balanced = BalancedSampler(lengths, ranks=2, micro_batch=4, seed=42)
    balanced.set_epoch(epoch)
    a, b = list(default), list(balanced)
    assert a != b and Counter(a) == Counter(b)
    assert all(sorted(a[s:s + 8]) == sorted(b[s:s + 8]) for s in range(0, 100, 8))


def test_sampler_order_depends_on_seed_and_epoch_only():
    """A resumed run rebuilds the sampler, sets the epoch and skips batches: it must see the
    very order the interrupted run saw."""
    lengths = _long_tailed(random.Random(1), 64)
    first = BalancedSampler(lengths, ranks=2, micro_batch=4, seed=7)
    again = BalancedSampler(lengths, ranks=2, micro_batch=4, seed=7)
    first.set_epoch(2)
    again.set_epoch(2)
    assert list(first) == list(again)
    assert list(first) != list(BalancedSampler(lengths, ranks=2, micro_batch=4, seed=8))
    again.set_epoch(3)
    assert list(again) != list(BalancedSampler(lengths, ranks=2, micro_batch=4, seed=7))


def test_accelerate_sharding_gives_each_rank_its_dealt_share():
    """accelerate hands micro-batch i to rank i % ranks; the sampler's layout relies on it."""
    lengths = _long_tailed(random.Random(5), 96)
    ranks, micro = 2, 6
    sampler = BalancedSampler(lengths, ranks=ranks, micro_batch=micro, seed=0)
    order = list(sampler)
    per_rank = []
    for rank in range(ranks):
        sampler.set_epoch(0)
        shard = BatchSamplerShard(BatchSampler(sampler, micro, drop_last=False),
                                  num_processes=ranks, process_index=rank)
        per_rank.append(list(shard))
    window = ranks * micro
    for step, batches in enumerate(zip(*per_rank)):
        rows = order[step * window:(step + 1) * window]
        assert [list(b) for b in batches] == [rows[r * micro:(r + 1) * micro]
                                              for r in range(ranks)]
        tokens = [sum(lengths[i] for i in b) for b in batches]
        assert max(tokens) - min(tokens) <= max(lengths[i] for i in rows)
