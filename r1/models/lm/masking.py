"""Masked-LM samples (the `mlm` pretraining objective): BERT-style corruption of token windows.

A share `prob` of the positions is chosen (at least one per window); of those 80% become the
`<|mask|>` token, 10% a random token and 10% stay as they are. The target is the original token
at chosen positions and -100 everywhere else, so the loss covers masked positions only. The model
sees the whole window (bidirectional attention) and predicts each position's own token.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

MASK = "<|mask|>"


def mask_tokens(ids: torch.Tensor, mask_id: int, vocab_size: int, prob: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (T,) int64 -> (corrupted x (T,), targets (T,) with -100 outside the chosen positions)."""
    T = ids.shape[0]
    r = torch.rand(T, generator=generator)
    chosen = r < prob
    chosen[r.argmin()] = True
    how = torch.rand(T, generator=generator)
    randoms = torch.randint(0, vocab_size, (T,), generator=generator)
    x = torch.where(chosen & (how < 0.8), torch.full_like(ids, mask_id), ids)
    x = torch.where(chosen & (how >= 0.8) & (how < 0.9), randoms, x)
    return x, torch.where(chosen, ids, torch.full_like(ids, -100))


class MaskedLMDataset(Dataset):
    """Windows of `base` (items (x, y) or ({"idx": x, ...}, y); x is the text) as masked-LM samples.
    fixed=True (validation / test): item i's mask depends only on (seed, i). Otherwise the mask is
    drawn from the global RNG, which the trainer seeds per sample: new masks every epoch, and the
    same ones after an exact resume."""

    def __init__(self, base: Dataset, mask_id: int, vocab_size: int, prob: float = 0.15, seed: int = 0,
                 fixed: bool = False):
        self.base, self.mask_id, self.vocab_size, self.prob = base, mask_id, vocab_size, prob
        self.seed, self.fixed = seed, fixed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        inputs, _ = self.base[i]
        ids = inputs["idx"] if isinstance(inputs, dict) else inputs
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i) if self.fixed else None
        x, y = mask_tokens(ids, self.mask_id, self.vocab_size, self.prob, g)
        return ({**inputs, "idx": x} if isinstance(inputs, dict) else x), y
