"""R1-LM: decoder-only pre-norm Transformer with gated global+local attention, dynamic depth
(early exit) and cross-layer fusion.

* Attention: one matmul gives queries, keys, values and per-head gate logits; two
  `scaled_dot_product_attention` calls compute full causal and sliding-window causal attention
  (`window` keys, itself included); y = g * global + (1 - g) * local with g = sigmoid(gate).
  With `objective: mlm` (masked-LM pretraining) both are bidirectional, the local one a band
  |i - j| < window. With `n_kv_head` < n_head, groups of query heads share key/value heads
  (grouped-query attention, SDPA's enable_gqa): a smaller qkv matmul and KV cache.
* Dynamic depth: blocks in `exit_layers` are followed by an exit head (own LayerNorm, then the
  shared, tied LM head), trained with the mean exit cross-entropy (`exit` loss), and a light exit
  classifier (MLP on detached features: normed state, top probability, entropy, drift from the
  previous exit) trained to predict that KL(final || exit) < exit_kl_tol (`conf` loss); in
  training all exit heads run as one batched computation after the last block. After training the
  trainer calls `calibrate`: per-head thresholds, chosen on validation data for the most blocks saved
  within a loss budget (`exit_calibrate`), become the default (`exit_thresholds`). At
  inference a token whose confidence reaches its head's threshold stops: deeper blocks do not run for it,
  its state is copied upward and only their keys/values are computed from it, so later tokens
  still attend to it (the same rule in parallel evaluation and with the KV cache).
* Cross-layer fusion: block j-2's output enters block j through a learned projection scaled by a
  sigmoid gate computed from that output.
* Weight tying, Xavier init, positions by RoPE (chosen by measurement over learned positions), adjacent
  head dimensions rotated as complex pairs.
* Optional `contrastive` loss for domain adaptation (r1.models.lm.contrastive) on mean-pooled final states.

Parts: the attention, block and fusion layers in `r1lm_blocks.py`; the exit heads, their losses and the
one-token decode path in `r1lm_exits.py` (a mixin of `R1LM`); this file: the model and its forward passes.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from r1.errors import ConfigError
from r1.models.lm.config import R1LMConfig
from r1.models.lm.contrastive import domain_contrastive, mean_pool
from r1.models.lm.layers import KVCache, Rotary, split_inputs
from r1.models.lm.r1lm_blocks import Block, Fusion
from r1.models.lm.r1lm_exits import ExitHeads
from r1.registry import register_model


class R1LM(ExitHeads, nn.Module):
    """`model(idx[B, T])` -> logits (B, T, V) at full depth, or with early exit when
    `exit_threshold` is given; `model(idx, targets[B, T])` -> {"lm", "exit"} losses
    (targets of -100 are ignored)."""

    def __init__(self, cfg: R1LMConfig):
        super().__init__()
        if cfg.num_classes <= 0:
            raise ConfigError("model.num_classes: the vocabulary size is unknown (0); set it or use an lm data kind")
        self.cfg = cfg
        self.block_size, self.n_layer = cfg.block_size, cfg.n_layer
        C = cfg.n_embd
        self.tok_emb = nn.Embedding(cfg.num_classes, C)
        self.pos_emb = nn.Embedding(cfg.block_size, C) if cfg.pos == "learned" else None
        self.rotary = Rotary(C // cfg.n_head, max_len=cfg.block_size) if cfg.pos == "rope" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.fuse = nn.ModuleList(Fusion(C) for _ in range(cfg.n_layer - 2)) if cfg.fusion else nn.ModuleList()
        self._init_exits(cfg)  # exit heads and classifiers (r1lm_exits)
        self.norm_f = nn.LayerNorm(C, bias=False)
        self.head = nn.Linear(C, cfg.num_classes, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        self.grad_ckpt = False
        self._frozen = 0
        self.last_layers_run: torch.Tensor | None = None  # (B, T) blocks run per token, last call
        self._init_weights()

    def _init_weights(self) -> None:
        for _name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for f in self.fuse:  # fusion starts mostly closed (gate ~0.12), projection bias zero
            with torch.no_grad():
                f.proj.bias[-1] = -2.0
        for b in self.blocks:  # residual branches scaled by depth keep the stream's variance steady
            b.attn.proj.weight.data.div_(math.sqrt(2 * self.n_layer))
            b.mlp.down.weight.data.div_(math.sqrt(2 * self.n_layer))
        nn.init.normal_(self.tok_emb.weight, 0.0, 0.02)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb.weight, 0.0, 0.02)

    # ------------------------------------------------------------------ hooks for the trainer
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_ckpt = enable

    def on_step_start(self, step: int, max_steps: int) -> None:
        """Progressive unfreezing: blocks 1..freeze_layers start frozen and are released one by one,
        top first, over the first `unfreeze_share` of the steps. The embedding (tied to the output
        head) always trains."""
        n, share = min(self.cfg.freeze_layers, self.n_layer), self.cfg.unfreeze_share
        frac = step / max(1, max_steps)
        frozen = 0 if n == 0 or share <= 0 or frac >= share else math.ceil(n * (1 - frac / share))
        if frozen != self._frozen:
            for j, block in enumerate(self.blocks):
                block.requires_grad_(j >= frozen)
            self._frozen = frozen

    def _run(self, idx, cache=None, exit_threshold=None, want_states=False, last_only=False):
        """Returns final logits (B, T|1, V), the outputs of the exit blocks (if `want_states`), the
        number of blocks run per token (B, T) and the final normalised states (B, T|1, C)."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        thr = self.thresholds(exit_threshold)
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            if start + T > self.block_size:
                raise ValueError(f"position {start + T} exceeds block_size {self.block_size} (learned positions)")
            x = x + self.pos_emb(torch.arange(start, start + T, device=idx.device))
        rope = self.rotary.cis(start, T) if self.rotary is not None else None
        prev, cur = None, self.drop(x)
        states, done, frozen, taken, prev_logp = [], None, None, None, None
        layers_run = torch.zeros(B, T, device=idx.device)
        for j, block in enumerate(self.blocks, 1):
            if done is not None and bool(done.all()):  # every token has exited
                if cache is not None:  # nothing left to compute but the keys/values later tokens need
                    block.fill_kv(frozen, rope, cache, j - 1)
                prev, cur = cur, frozen
                continue
            u = self.fuse[j - 3](cur, prev) if (self.fuse and j >= 3) else cur
            if done is not None:  # exited tokens keep their state; deeper blocks only read it
                u = torch.where(done[..., None], frozen, u)
            if self.grad_ckpt and self.training and u.requires_grad:
                h = checkpoint(block, u, rope, cache, j - 1, use_reentrant=False)
            else:
                h = block(u, rope, cache, j - 1)
            layers_run += 1 if done is None else (~done).float()
            if done is not None:
                h = torch.where(done[..., None], frozen, h)
            prev, cur = cur, h
            if j in self.exit_set and want_states:
                states.append(h)
            if j in self.exit_set and thr is not None:
                lg, conf, prev_logp = self._exit(j, h, prev_logp)
                new = self._confident(lg, conf, thr[j])  # (B, T)
                if done is None:
                    done, frozen, taken = new, h, lg
                else:
                    new &= ~done
                    done, frozen = done | new, torch.where(new[..., None], h, frozen)
                    taken = torch.where(new[..., None], lg, taken)
        if cache is not None:
            cache.advance(T)
        if last_only:
            cur = cur[:, -1:]
            if done is not None:
                done, taken = done[:, -1:], taken[:, -1:]
        hidden = self.norm_f(cur)
        logits = self.head(hidden)
        if done is not None:
            logits = torch.where(done[..., None], taken, logits)
        return logits, states, layers_run, hidden

    def forward(self, idx, targets: torch.Tensor | None = None, exit_threshold: float | None = None):
        """`idx`: ids (B, T) or {"idx", "domain"} (see `split_inputs`). With `objective: mlm` the
        targets are the tokens at the masked positions themselves (-100 elsewhere), not the next ones."""
        idx, domain = split_inputs(idx)
        want = targets is not None and self.cfg.exit_weight > 0 and bool(self.exit_layers)
        logits, states, layers, hidden = self._run(idx, exit_threshold=exit_threshold, want_states=want)
        self.last_layers_run = layers
        if targets is None:
            return logits
        flat = targets.flatten()
        if getattr(self, "keep_train_logits", False):  # distillation takes them (lm_kd): no second pass
            self.train_logits = logits
        losses = {"lm": F.cross_entropy(logits.flatten(0, 1), flat, ignore_index=-100)}
        if want:
            ce, conf = self.exit_losses(states, logits, targets)
            losses["exit"] = self.cfg.exit_weight * ce
            losses["conf"] = conf
        if self.cfg.contrastive_weight > 0:
            if domain is None:
                raise ConfigError("model.contrastive_weight: the batch does not say which samples are replayed; "
                                  "set data.replay and data.replay_labels=true")
            z = mean_pool(hidden, targets)  # (B, C)
            losses["contrastive"] = self.cfg.contrastive_weight * domain_contrastive(z, domain,
                                                                                     self.cfg.contrastive_temp)
        return losses

    @torch.no_grad()
    def forward_cached(self, idx: torch.Tensor, cache: KVCache, exit_threshold: float | None = None) -> torch.Tensor:
        """Run new tokens idx (B, t) against `cache`; returns logits of the last position (B, V)."""
        if self.cfg.objective == "mlm":
            raise ValueError("a masked-LM model (objective: mlm) does not generate text left to right")
        if idx.shape == (1, 1) and not self.training:
            logits, depth = self._decode_one(idx, cache, self.thresholds(exit_threshold))
            self.last_layers_run = self._depths[depth]
            return logits[:, -1]
        logits, _, layers, _ = self._run(idx, cache, exit_threshold, last_only=True)
        self.last_layers_run = layers
        return logits[:, -1]

    def new_cache(self) -> KVCache:
        return KVCache(self.n_layer, self.block_size)


@register_model("r1_lm", family="lm", config=R1LMConfig)
def r1_lm(cfg: R1LMConfig) -> nn.Module:
    """R1-LM: gated global+local attention, early exit, cross-layer fusion, tied weights."""
    return R1LM(cfg)
