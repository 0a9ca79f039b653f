"""Spreading each micro-step's rows over the ranks by token count (padding-free batches).

Padding-free batches cost about as much as the tokens they hold, and long-tailed rows give
the ranks very different token counts, so at every collective (TRL's per-micro-batch metric
gathers, DDP's gradient all-reduce) the rank with fewer tokens waits for the other.

`BalancedSampler` yields the same shuffled order as the default sampler (accelerate's
`SeedableRandomSampler`: `randperm` seeded with data_seed + epoch), then rearranges each
window of `ranks x micro_batch` consecutive indices - the rows the ranks train on together in
one micro-step - so that accelerate's `BatchSamplerShard`, which hands micro-batch i to rank
i % ranks, gives each rank a near-equal share of tokens. Only positions inside a window move:
every micro-step (so every optimizer step) trains on the same rows as without balancing, and
the loss, normalized by the token count of all ranks, gives the same gradient. The order is a
function of (seed, epoch) alone, so a resume that skips the first batches lands exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def deal_rows(lengths: Sequence[int], ranks: int, rows_per_rank: int) -> list[list[int]]:
    """Assign `ranks * rows_per_rank` rows (by position in `lengths`) to ranks, each rank
    getting exactly `rows_per_rank` of them: longest first, each to the rank with the fewest
    tokens so far that still has room. Ties go to the lower rank and the earlier row, so every
    rank computes the same assignment without talking to the others."""
    if len(lengths) != ranks * rows_per_rank:
        raise ValueError(f"{len(lengths)} rows cannot be dealt as {ranks} x {rows_per_rank}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    assigned: list[list[int]] = [[] for _ in range(ranks)]
    tokens = [0] * ranks
    for row in order:
        rank = min((r for r in range(ranks) if len(assigned[r]) < rows_per_rank),
                   key=lambda r: (tokens[r], r))
        assigned[rank].append(row)
        tokens[rank] += lengths[row]
    return assigned


def balanced_order(order: Sequence[int], lengths: Sequence[int], ranks: int,
                   micro_batch: int) -> list[int]:
    """`order` with each full window of ranks x micro_batch indices rearranged so that its
    r-th block of micro_batch indices is rank r's share (see `deal_rows`). A last partial
    window stays as it is: accelerate completes it by wrapping around, which we cannot see."""
    window = ranks * micro_batch
    out: list[int] = []
    full = len(order) - len(order) % window
    for start in range(0, full, window):
        chunk = order[start:start + window]
        for share in deal_rows([lengths[i] for i in chunk], ranks, micro_batch):
            out.extend(chunk[position] for position in share)
    out.extend(order[full:])
    return out


class BalancedSampler(Sampler[int]):
    """The default shuffled order with every micro-step balanced over the ranks.

    Deliberately not a RandomSampler subclass: accelerate swaps any RandomSampler for its own
    SeedableRandomSampler, which would drop the balancing.
    """

    def __init__(self, lengths: Sequence[int], *, ranks: int, micro_batch: int,
                 seed: int) -> None:
        self.lengths = list(lengths)
        self.ranks, self.micro_batch, self.seed = ranks, micro_batch, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # The same permutation SeedableRandomSampler draws for this epoch, so the rows of
        # each step do not change when balancing is switched on.
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        yield from balanced_order(order, self.lengths, self.ranks, self.micro_batch)
        self.epoch += 1  # like SeedableRandomSampler, in case nobody calls set_epoch
