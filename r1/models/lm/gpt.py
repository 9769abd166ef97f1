"""Plain GPT (nanoGPT-style), written here as the baseline R1-LM is measured against.

Learned position embeddings, pre-norm LayerNorm blocks, GELU MLP, tied input/output embeddings,
GPT-2 initialisation. The `small` flavor is nanoGPT's Shakespeare CPU configuration
(4 layers, 4 heads, 128 channels, context 64, no dropout): 0.80M parameters at a 65-char vocab.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1.errors import ConfigError
from r1.models.lm.config import GPTConfig
from r1.models.lm.layers import MLP, KVCache, causal_mask, split_inputs
from r1.registry import register_model


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.causal = cfg.n_head, cfg.objective != "mlm"
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> 3 x (B, nh, T, hs)
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        start = 0
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)
        if start == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        elif T == 1:  # one new token sees every cached key: no mask
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(start, T, k.shape[2], device=x.device))
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg.n_embd, "gelu", bias=cfg.bias, dropout=cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """`model(idx[B, T])` -> logits (B, T, V); `model(idx, targets[B, T])` -> {"lm": mean CE}
    (targets of -100 are ignored)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.num_classes <= 0:
            raise ConfigError("model.num_classes: the vocabulary size is unknown (0); set it or use an lm data kind")
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.n_layer = cfg.n_layer
        self.tok_emb = nn.Embedding(cfg.num_classes, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, cfg.num_classes, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.down.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def _hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(T)
        return self.ln_f(x)

    def forward(self, idx, targets: torch.Tensor | None = None):
        idx, _ = split_inputs(idx)
        logits = self.head(self._hidden(idx))  # (B, T, V)
        if targets is None:
            return logits
        if getattr(self, "keep_train_logits", False):  # distillation takes them (lm_kd): no second pass
            self.train_logits = logits
        return {"lm": F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)}

    @torch.no_grad()
    def forward_cached(self, idx: torch.Tensor, cache: KVCache, exit_threshold: float | None = None) -> torch.Tensor:
        """Run new tokens idx (B, t) against `cache`; returns logits of the last position (B, V)."""
        if not self.blocks[0].attn.causal:
            raise ValueError("a masked-LM model (objective: mlm) does not generate text left to right")
        h = self._hidden(idx, cache)
        return self.head(h[:, -1])

    def new_cache(self) -> KVCache:
        return KVCache(self.n_layer, self.block_size)


@register_model("gpt", family="lm", config=GPTConfig)
def gpt(cfg: GPTConfig) -> nn.Module:
    """Plain GPT baseline (learned positions, LayerNorm, GELU, tied embeddings)."""
    return GPT(cfg)
