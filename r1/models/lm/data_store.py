"""Token storage for the lm family: token ids in memory-mapped files, windows as samples.

A corpus is tokenized once into `<cache>/<key>/{train,val}.bin` (uint16 when the vocabulary
fits, else uint32) plus `info.json`; the key hashes the source identity and every setting that
changes the tokens, so a second run maps the files instead of re-reading the corpus.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def cache_root(cache_dir: str = "") -> Path:
    return Path(cache_dir or os.environ.get("R1_CACHE", "") or Path.home() / ".cache" / "r1") / "text"


def cache_key(parts: dict) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65535 else np.uint32


def write_tokens(path: Path, ids: list[int] | np.ndarray, vocab_size: int) -> None:
    arr = np.asarray(ids, dtype=token_dtype(vocab_size))
    tmp = path.with_suffix(".tmp")
    arr.tofile(tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file


class WindowDataset(Dataset):
    """Windows of a token file: item i = (x, y) with x = ids[s : s+T], y = ids[s+1 : s+T+1],
    s = i * stride (int64 tensors of shape [T]). The file is opened lazily (fork/worker-safe)."""

    def __init__(self, path: str | Path, vocab_size: int, block_size: int, stride: int = 1):
        self.path, self.dtype = str(path), token_dtype(vocab_size)
        self.block_size, self.stride = block_size, stride
        self.n_tokens = os.path.getsize(self.path) // np.dtype(self.dtype).itemsize
        self._arr = None

    def tokens(self) -> np.ndarray:
        if self._arr is None:
            self._arr = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._arr

    def __len__(self) -> int:
        return max(0, (self.n_tokens - self.block_size - 1) // self.stride + 1)

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        s = i * self.stride
        chunk = torch.from_numpy(self.tokens()[s:s + self.block_size + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]

    def __getstate__(self):
        return {**self.__dict__, "_arr": None}
