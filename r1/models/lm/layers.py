"""Pieces shared by the language models: KV cache, attention masks, rotary embeddings, MLPs.

Tensor layout inside attention is (B, nh, T, hs): batch, heads, time, head size.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class KVCache:
    """Keys/values of every layer for the tokens seen so far, preallocated to `capacity` positions.

    A layer writes its new (B, nh, t, hs) keys/values at `pos` with `update`; the model calls
    `advance(t)` once all layers have written. `layers_run` counts, per generated token, how many
    blocks actually ran (early exit skips blocks but still fills their keys/values).
    """

    def __init__(self, n_layer: int, capacity: int):
        self.n_layer, self.capacity, self.pos = n_layer, capacity, 0
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer

    def _alloc(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Every layer's storage at once, one (n_layer, B, nh, capacity, hs) tensor each for keys and
        values (`fill` writes several layers in one op); `k[layer]` / `v[layer]` are views of it."""
        B, nh, _, hs = k.shape
        self.all_k = k.new_zeros(self.n_layer, B, nh, self.capacity, hs)
        self.all_v = v.new_zeros(self.n_layer, B, nh, self.capacity, hs)
        self.k = [self.all_k[i] for i in range(self.n_layer)]  # single views (unbind's may not be written in grad mode)
        self.v = [self.all_v[i] for i in range(self.n_layer)]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        if self.pos + t > self.capacity:
            raise ValueError(f"KV cache full: {self.pos} + {t} > {self.capacity}")
        if self.k[layer] is None:
            self._alloc(k, v)
        self.k[layer][:, :, self.pos:self.pos + t] = k
        self.v[layer][:, :, self.pos:self.pos + t] = v
        return self.k[layer][:, :, :self.pos + t], self.v[layer][:, :, :self.pos + t]

    def fill(self, first: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Keys/values (D, B, nh, t, hs) of layers first..first+D-1 at `pos`, in one write each (early
        exit: the blocks a token skipped). The layers below must have been written (storage exists)."""
        t = k.shape[3]
        if self.pos + t > self.capacity:
            raise ValueError(f"KV cache full: {self.pos} + {t} > {self.capacity}")
        self.all_k[first:first + k.shape[0], :, :, self.pos:self.pos + t] = k
        self.all_v[first:first + v.shape[0], :, :, self.pos:self.pos + t] = v

    def advance(self, t: int) -> None:
        self.pos += t


def causal_mask(q_start: int, t: int, kv_len: int, window: int = 0, device=None) -> torch.Tensor:
    """Bool mask (t, kv_len): query at absolute position q_start+i may see key j iff
    j <= q_start+i and, when `window` > 0, j > q_start+i-window (a sliding window of `window` keys)."""
    qpos = torch.arange(q_start, q_start + t, device=device)[:, None]
    kpos = torch.arange(kv_len, device=device)[None, :]
    mask = kpos <= qpos
    if window > 0:
        mask &= kpos > qpos - window
    return mask


def band_mask(t: int, window: int, device=None) -> torch.Tensor:
    """Bool mask (t, t) of bidirectional sliding-window attention: i may see j iff |i - j| < window."""
    pos = torch.arange(t, device=device)
    return (pos[:, None] - pos[None, :]).abs() < window


def split_inputs(inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Model inputs are token ids (B, T), or {"idx": ids, "domain": (B,) source labels} when the
    data marks replayed samples (`data.replay_labels`). -> (ids, domain or None)."""
    if isinstance(inputs, dict):
        return inputs["idx"], inputs.get("domain")
    return inputs, None


class Rotary(nn.Module):
    """Rotary position embedding applied to (..., hs) queries/keys, head dimensions rotated in
    adjacent pairs (2i, 2i+1) by the angle pos * base^(-2i/hs), as one complex multiply."""

    def __init__(self, head_size: int, base: float = 10000.0, max_len: int = 0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        # rotations of positions 0..max_len-1, computed once: a slice of this table per forward
        self.register_buffer("table", self._cis(0, max_len), persistent=False)

    def _cis(self, start: int, t: int) -> torch.Tensor:
        pos = torch.arange(start, start + t, device=self.inv_freq.device, dtype=torch.float32)
        return torch.polar(torch.ones((), device=pos.device), torch.outer(pos, self.inv_freq))  # (T, hs/2) complex64

    def cis(self, start: int, t: int) -> torch.Tensor:
        """-> unit complex rotations (T, hs/2) of positions start..start+t-1."""
        if start + t <= self.table.shape[0]:
            return self.table[start:start + t]
        return self._cis(start, t)


def apply_rotary(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, [...,] hs) by cis (broadcastable to (..., T, [...,] hs/2)): pairs of adjacent
    head dimensions as complex numbers times cis, in float32; one kernel forward and one backward
    (the rotate-half form took four elementwise ops each way, ~3x the time)."""
    xf = x.float()
    if xf.storage_offset() % 2 or any(s % 2 for s in xf.stride()[:-1]):  # view_as_complex needs even strides
        xf = xf.contiguous()
    z = torch.view_as_complex(xf.unflatten(-1, (-1, 2)))
    return torch.view_as_real(z * cis).flatten(-2).type_as(x)


class MLP(nn.Module):
    """Feed-forward block: `gelu` (Linear-GELU-Linear, 4x) or `swiglu` (gated, ~8/3 x, same params)."""

    def __init__(self, dim: int, kind: str = "gelu", bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.kind = kind
        if kind == "swiglu":
            hidden = int(8 * dim / 3 + 7) // 8 * 8
            self.up = nn.Linear(dim, 2 * hidden, bias=bias)  # value and gate in one matmul
        else:
            hidden = 4 * dim
            self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.kind == "swiglu":
            a, g = h.chunk(2, dim=-1)
            h = a * F.silu(g)
        else:
            h = F.gelu(h)
        return self.drop(self.down(h))
