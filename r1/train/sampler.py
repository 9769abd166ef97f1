"""Data order that survives an exact resume, with or without torchrun.

`ResumableSampler` yields `(index, sample_seed)` for this rank: a permutation drawn from
(seed, epoch), sharded across ranks, starting at any position. `SeededItems` applies the
per-sample seed around the dataset's `__getitem__`, so augmentation depends only on
(seed, epoch, position), never on worker count or on when the process started.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler):
    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.length, self.seed, self.shuffle, self.rank, self.world = length, seed, shuffle, rank, world
        self.epoch, self.start = 0, 0
        self.per_rank = length // world  # drop the ragged tail so ranks stay in lockstep
        self.weights: torch.Tensor | None = None  # per-item draw weights (data.balance=sampler): with replacement
        # (index, global position of the sample in training) -> the index actually served (a curriculum);
        # a pure function of its arguments, so that an exact resume stays exact
        self.remap = None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start`: how many of this rank's samples of `epoch` were already consumed."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.length, replacement=True, generator=g)
        else:
            order = torch.randperm(self.length, generator=g) if self.shuffle else torch.arange(self.length)
        mine = order[self.rank: self.per_rank * self.world: self.world]
        base = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        for pos in range(self.start, self.per_rank):
            idx = int(mine[pos])
            if self.remap is not None:
                idx = self.remap(idx, self.epoch * self.per_rank + pos)
            # an item drawn twice (weighted draw) gets a fresh augmentation seed per draw
            key = idx if self.weights is None else idx + self.length * (pos * self.world + self.rank)
            yield idx, (base + key) % (2 ** 63)


class SeededItems(Dataset):
    """Dataset wrapper taking `(index, seed)` keys; the global RNG is seeded per item, then restored."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        idx, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[idx]
