"""Continual learning: a reservoir replay buffer and a dataset that mixes it into a later stage."""
from __future__ import annotations

import random
from typing import Any, Iterable

import torch
from torch.utils.data import Dataset


class ReservoirBuffer:
    """Uniform sample of at most `capacity` items from a stream of unknown length (algorithm R)."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity, self.seen, self.items = capacity, 0, []
        self._rng = random.Random(seed)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.capacity:
                self.items[j] = item

    def extend(self, items: Iterable[Any]) -> "ReservoirBuffer":
        for it in items:
            self.add(it)
        return self


def _mix(i: int, seed: int) -> int:
    """Deterministic 64-bit hash of (index, seed): the same samples after an exact resume."""
    x = (i * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 29)


class ReplayMixDataset(Dataset):
    """Item i is, with probability `ratio` (fixed per index), an item of the replay buffer instead
    of `current[i]`. Both must yield the same (inputs, target) shapes. With `labels`, the inputs
    become {"idx": inputs, "domain": 0 (current) or 1 (replayed)}."""

    def __init__(self, current: Dataset, replay: list, ratio: float, seed: int = 0, labels: bool = False):
        self.current, self.replay, self.ratio, self.seed, self.labels = current, replay, ratio, seed, labels

    def __len__(self) -> int:
        return len(self.current)

    def __getitem__(self, i: int):
        h = _mix(i, self.seed)
        replayed = bool(self.replay) and (h & 0xFFFF) < self.ratio * 0x10000
        item = self.replay[(h >> 16) % len(self.replay)] if replayed else self.current[i]
        if not self.labels:
            return item
        return {"idx": item[0], "domain": torch.tensor(int(replayed))}, item[1]
