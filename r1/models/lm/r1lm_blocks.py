"""R1-LM's layers: gated global+local attention, the pre-norm block, cross-layer fusion.

Attention: one matmul gives queries, keys, values and per-head gate logits; two
`scaled_dot_product_attention` calls compute full causal and sliding-window causal attention
(`window` keys, itself included); y = g * global + (1 - g) * local with g = sigmoid(gate). With
`objective: mlm` both are bidirectional, the local one a band |i - j| < window; with `n_kv_head` <
n_head, groups of query heads share key/value heads (grouped-query attention).
"""
from __future__ import annotations

from functools import lru_cache, partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1.models.lm.config import R1LMConfig
from r1.models.lm.layers import MLP, KVCache, apply_rotary, band_mask, causal_mask


@lru_cache(maxsize=64)
def _mask(start: int, t: int, kv_len: int, window: int, device: torch.device) -> torch.Tensor:
    return causal_mask(start, t, kv_len, window, device)


@lru_cache(maxsize=16)
def _band(t: int, window: int, device: torch.device) -> torch.Tensor:
    return band_mask(t, window, device)


class GatedAttention(nn.Module):
    def __init__(self, cfg: R1LMConfig):
        super().__init__()
        self.n_head, self.window = cfg.n_head, cfg.window
        self.n_kv = cfg.n_kv_head or cfg.n_head
        self.kv_dim = self.n_kv * (cfg.n_embd // cfg.n_head)
        self.causal = cfg.objective != "mlm"
        # grouped-query attention: SDPA shares each key/value head among its query heads itself
        gqa = self.n_kv != self.n_head
        self.sdpa = partial(F.scaled_dot_product_attention, enable_gqa=True) if gqa else F.scaled_dot_product_attention
        # queries, keys, values and the per-head gate logits from one matmul: (C) -> (C + 2 kv_dim + nh)
        self.qkv = nn.Linear(cfg.n_embd, cfg.n_embd + 2 * self.kv_dim + cfg.n_head, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def _split(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        B, T, C = t.shape
        return t.view(B, T, heads, C // heads).transpose(1, 2)  # (B, T, C) -> (B, heads, T, hs)

    def fill_kv(self, x: torch.Tensor, rope, cache: KVCache, layer: int) -> None:
        """Keys/values only (for tokens that exited before this layer)."""
        C = x.shape[-1]
        k, v = F.linear(x, self.qkv.weight[C:C + 2 * self.kv_dim]).split(self.kv_dim, dim=-1)
        if rope is not None:
            k = apply_rotary(k.unflatten(-1, (self.n_kv, -1)), rope[:, None]).flatten(-2)
        cache.update(layer, self._split(k, self.n_kv), self._split(v, self.n_kv))

    def attend(self, q, k, v, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B, nh, T, hs) at positions start.. against keys/values (B, n_kv, L, hs) ->
        (full causal, sliding-window causal) outputs, each (B, nh, T, hs)."""
        sdpa = self.sdpa
        T, L = q.shape[2], k.shape[2]
        if not self.causal:  # masked LM: every key; the local branch a band |i - j| < window
            glob = sdpa(q, k, v)
            if L <= self.window:
                return glob, glob
            return glob, sdpa(q, k, v, attn_mask=_band(L, self.window, q.device))
        if T == 1:  # one new token (cached generation): it sees every key; the window is a slice, no mask
            glob = sdpa(q, k, v)
            if L <= self.window:
                return glob, glob
            return glob, sdpa(q, k[:, :, -self.window:], v[:, :, -self.window:])
        if start == 0:
            glob = sdpa(q, k, v, is_causal=True)
        else:
            glob = sdpa(q, k, v, attn_mask=_mask(start, T, L, 0, q.device))
        if L <= self.window:  # every visible key is inside the window: local == global
            return glob, glob
        return glob, sdpa(q, k, v, attn_mask=_mask(start, T, L, self.window, q.device))

    def forward(self, x: torch.Tensor, rope, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        qk, v, gate = self.qkv(x).split([C + self.kv_dim, self.kv_dim, self.n_head], dim=-1)
        if rope is not None:  # rotate queries and keys in one go: (B, T, nh + n_kv, hs)
            qk = apply_rotary(qk.view(B, T, self.n_head + self.n_kv, -1), rope[:, None])
            qk = qk.view(B, T, C + self.kv_dim)
        q, k = qk.split([C, self.kv_dim], dim=-1)
        q, k, v = self._split(q, self.n_head), self._split(k, self.n_kv), self._split(v, self.n_kv)
        if q.is_cuda:  # rows of the fused qkv+gate projection are not 16-byte aligned in bf16: the
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # efficient kernel crashed (H200)
        start = 0
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)
        glob, loc = self.attend(q, k, v, start)
        g = torch.sigmoid(gate).transpose(1, 2).unsqueeze(-1)  # (B, T, nh) -> (B, nh, T, 1)
        y = torch.lerp(loc, glob, g)  # g * glob + (1 - g) * loc
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: R1LMConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.attn = GatedAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.mlp = MLP(cfg.n_embd, cfg.mlp, dropout=cfg.dropout)

    def forward(self, x, rope, cache=None, layer=0):
        x = x + self.attn(self.norm1(x), rope, cache, layer)
        return x + self.mlp(self.norm2(x))

    def fill_kv(self, x, rope, cache, layer):
        self.attn.fill_kv(self.norm1(x), rope, cache, layer)


class Fusion(nn.Module):
    """cur + sigmoid(w . old + b) * P(old): the output of block j-2 entering block j.
    Projection and gate share one matmul (C -> C + 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim + 1)

    def forward(self, cur: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        p, g = self.proj(old).split([cur.shape[-1], 1], dim=-1)
        return torch.addcmul(cur, torch.sigmoid(g), p)  # cur + gate * P(old) in one op
