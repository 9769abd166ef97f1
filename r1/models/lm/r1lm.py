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
"""
from __future__ import annotations

import math
from functools import lru_cache, partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from r1.errors import ConfigError
from r1.models.lm.config import R1LMConfig
from r1.models.lm.contrastive import domain_contrastive, mean_pool
from r1.models.lm.layers import MLP, KVCache, Rotary, apply_rotary, band_mask, causal_mask, split_inputs
from r1.registry import register_model

CONF_STRIDE = 4  # exit classifiers train on every 4th position: plenty for 4k parameters, a quarter of the cost


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


class R1LM(nn.Module):
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
        exits = cfg.exit_layers or list(range(1, cfg.n_layer))
        self.exit_layers = sorted(set(exits))
        self.exit_set = frozenset(self.exit_layers)
        self.exit_norms = nn.ModuleDict({str(j): nn.LayerNorm(C, bias=False) for j in self.exit_layers})
        # light exit classifiers on detached features: they never change the language model itself
        # features: normed state, top probability, entropy, KL to the previous exit head's prediction
        feat = C if cfg.exit_criterion == "state" else C + 3  # `state`: the normed state alone (no head needed)
        self.exit_conf = nn.ModuleDict({str(j): nn.Sequential(nn.Linear(feat, 32), nn.GELU(), nn.Linear(32, 1))
                                        for j in self.exit_layers})
        self._kv_fold: dict[int, tuple] = {}  # exit layer -> folded K/V weights of the deeper blocks (_folded_kv)
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

    # ------------------------------------------------------------------ forward
    def _conf_features(self, hn: torch.Tensor, logp: torch.Tensor, prev_logp: torch.Tensor) -> torch.Tensor:
        """Exit-classifier input from normed states hn (..., C) and detached exit log-probs (..., V):
        [hn, top probability, normalised entropy, KL drift from the previous exit head] (..., C + 3);
        with exit_criterion `state`, hn alone (..., C)."""
        if self.cfg.exit_criterion == "state":
            return hn.detach()
        p = logp.exp()
        top = logp.amax(-1, keepdim=True).exp()
        ent = -(p * logp).sum(-1, keepdim=True) / math.log(logp.shape[-1])
        drift = (p * (logp - prev_logp)).sum(-1, keepdim=True).clamp(max=10.0)
        return torch.cat([hn.detach(), top, ent, drift], dim=-1).to(hn.dtype)

    def _exit(self, j: int, h: torch.Tensor, prev_logp: torch.Tensor | None):
        """Exit head j on states h (B, T, C) -> (logits (B, T, V), confidence logit (B, T), log-probs)."""
        hn = self.exit_norms[str(j)](h)
        logits = self.head(hn)
        logp = F.log_softmax(logits.detach().float(), dim=-1)
        feats = self._conf_features(hn, logp, logp if prev_logp is None else prev_logp)  # first head: no drift
        return logits, self.exit_conf[str(j)](feats).squeeze(-1), logp

    def exit_losses(self, states: list[torch.Tensor], final: torch.Tensor,
                    targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training losses of all exit heads at once, from their blocks' outputs `states` (E x (B, T, C))
        and the final logits (B, T, V): (mean exit cross-entropy, exit-classifier BCE), both on every
        `exit_stride`-th position. The classifiers learn `safe` = KL(final || exit) < exit_kl_tol on
        every CONF_STRIDE-th position (detached inputs: they never change the language model)."""
        E, pos = len(states), slice(self.cfg.exit_stride - 1, None, self.cfg.exit_stride)
        H = torch.stack([h[:, pos] for h in states])  # (E, B, T', C): every exit_stride-th position
        targets, final = targets[:, pos], final[:, pos]
        hn = F.layer_norm(H, H.shape[-1:], eps=self.exit_norms[str(self.exit_layers[0])].eps)  # no weight yet
        w = torch.stack([self.exit_norms[str(j)].weight for j in self.exit_layers])  # (E, C)
        # each exit norm's weight folded into the tied head: (E, V, C), one batched matmul for all heads
        logits = torch.bmm(hn.flatten(1, 2), (self.head.weight[None] * w[:, None]).transpose(1, 2))
        logits = logits.view(*H.shape[:-1], -1)  # (E, B, T', V)
        ce = F.cross_entropy(logits.flatten(0, 2).float(), targets.expand(E, -1, -1).flatten(), ignore_index=-100)
        sub = slice(None, None, max(1, CONF_STRIDE // self.cfg.exit_stride))
        lp = F.log_softmax(logits[:, :, sub].detach().float(), dim=-1)  # (E, B, T'', V)
        feats = self._conf_features(hn[:, :, sub] * w[:, None, None], lp, torch.cat([lp[:1], lp[:-1]]))
        conf = self._exit_classifiers(feats.flatten(1, 2)).view(lp.shape[:-1])  # (E, B, T'')
        logp_f = F.log_softmax(final[:, sub].detach().float(), dim=-1)  # (B, T'', V)
        safe = ((logp_f.exp() * (logp_f - lp)).sum(-1) < self.cfg.exit_kl_tol).float()  # (E, B, T'')
        valid = targets[:, sub] != -100
        if not valid.any():  # e.g. short responses: no sampled position carries a target
            return ce, conf.sum() * 0.0
        return ce, F.binary_cross_entropy_with_logits(conf[:, valid], safe[:, valid])

    def _exit_classifiers(self, feats: torch.Tensor) -> torch.Tensor:
        """All exit classifiers at once on their features (E, N, C + 3) -> confidence logits (E, N):
        the same MLPs as `exit_conf`, their weights stacked into two batched matmuls."""
        mlps = [self.exit_conf[str(j)] for j in self.exit_layers]
        w1, b1 = torch.stack([m[0].weight for m in mlps]), torch.stack([m[0].bias for m in mlps])  # (E, 32, C+3)
        w2, b2 = torch.stack([m[2].weight for m in mlps]), torch.stack([m[2].bias for m in mlps])  # (E, 1, 32)
        h = F.gelu(torch.baddbmm(b1[:, None], feats, w1.transpose(1, 2)))  # (E, N, 32)
        return torch.baddbmm(b2[:, None], h, w2.transpose(1, 2)).squeeze(-1)

    def thresholds(self, exit_threshold) -> dict[int, float] | None:
        """`exit_threshold` (one float for every head, or one per head in exit_layers order, None: no
        early exit) -> {exit layer: threshold}."""
        if exit_threshold is None:
            return None
        if isinstance(exit_threshold, (int, float)):
            return dict.fromkeys(self.exit_layers, float(exit_threshold))
        if len(exit_threshold) != len(self.exit_layers):
            raise ValueError(f"{len(exit_threshold)} exit thresholds for {len(self.exit_layers)} exit heads")
        return dict(zip(self.exit_layers, map(float, exit_threshold)))

    @property
    def default_exit_threshold(self) -> float | list[float]:
        """The calibrated per-head thresholds when there are, else the configured exit_threshold."""
        return list(self.cfg.exit_thresholds) or self.cfg.exit_threshold

    def calibrate(self, loader) -> None:
        """After training (the trainer calls this): set exit_thresholds from exit_calibrate_batches validation
        batches (windows evenly spaced over the split), the most generation cost saved (blocks, exit checks
        and skipped blocks' keys/values, weighed by exit_check_cost / exit_fill_cost) with the loss rise
        within exit_calibrate at exit_calibrate_confidence (r1.models.lm.early_exit.calibrate_exits)."""
        if self.cfg.exit_calibrate <= 0 or not self.exit_layers or self.cfg.objective == "mlm":
            return
        from r1.models.lm.early_exit import calibrate_exits
        cfg = self.cfg
        self.cfg.exit_thresholds = calibrate_exits(self, loader, cfg.exit_calibrate, cfg.exit_calibrate_batches,
                                                   check=cfg.exit_check_cost, fill=cfg.exit_fill_cost,
                                                   confidence=cfg.exit_calibrate_confidence)["thresholds"]

    def _confident(self, logits: torch.Tensor | None, conf: torch.Tensor, threshold: float) -> torch.Tensor:
        if self.cfg.exit_criterion == "maxprob":
            return F.softmax(logits.float(), dim=-1).amax(-1) >= threshold
        return torch.sigmoid(conf.float()) >= threshold

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

    @property
    def _depths(self) -> list[torch.Tensor]:
        """(1, 1) tensors 0..n_layer, made once: `last_layers_run` of a decode step without a new op."""
        if getattr(self, "_depth_cache", None) is None:
            self._depth_cache = [torch.full((1, 1), float(d)) for d in range(self.n_layer + 1)]
        return self._depth_cache

    def _decode_one(self, idx: torch.Tensor, cache: KVCache, thr: dict[int, float] | None) -> tuple[torch.Tensor, int]:
        """The generation hot path: one new token of one sequence (1, 1) against `cache` -> (logits (1, 1, V),
        blocks run). The same result as `_run` (early exit included) with far fewer ops: an exit head runs
        only where its threshold can be met (<= 1; with the `learned` criterion every head up to the last
        such one runs, its features chain through them), the LM head only once, where the token leaves, and the skipped blocks'
        keys/values come from one matmul (`_fill_deeper`)."""
        pos = cache.pos
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            if pos + 1 > self.block_size:
                raise ValueError(f"position {pos + 1} exceeds block_size {self.block_size} (learned positions)")
            x = x + self.pos_emb.weight[pos]
        rope = self.rotary.cis(pos, 1) if self.rotary is not None else None
        chain = self.cfg.exit_criterion == "learned"
        last = max((j for j, t in thr.items() if t <= 1.0), default=0) if thr is not None else 0
        prev, cur, prev_logp = None, x, None
        for j, block in enumerate(self.blocks, 1):
            u = self.fuse[j - 3](cur, prev) if (self.fuse and j >= 3) else cur
            h = block(u, rope, cache, j - 1)
            prev, cur = cur, h
            if j > last or j not in self.exit_set or (thr[j] > 1.0 and not chain):
                continue
            if self.cfg.exit_criterion == "state":
                hn = self.exit_norms[str(j)](h)
                conf, logits = self.exit_conf[str(j)](hn).squeeze(-1), None
            else:
                logits, conf, prev_logp = self._exit(j, h, prev_logp)
            if bool(self._confident(logits, conf, thr[j])):
                if j < self.n_layer:
                    self._fill_deeper(j, h, rope, cache)
                cache.advance(1)
                return (self.head(hn) if logits is None else logits), j
        cache.advance(1)
        return self.head(self.norm_f(cur)), self.n_layer

    def _fill_deeper(self, j: int, h: torch.Tensor, rope, cache: KVCache) -> None:
        """Keys/values of blocks j+1.. for a token that left at block j, computed from its state h (1, 1, C)
        as those blocks would (their norm1, then the K/V rows of qkv): each norm's weight folded into
        its rows, all blocks in one matmul, all keys rotated at once, one cache write each."""
        weight, shape, eps = self._folded_kv(j)
        kv = F.linear(F.layer_norm(h[0], h.shape[-1:], eps=eps), weight).view(shape)  # (D, k|v, B, n_kv, T, hs)
        k = kv[:, 0] if rope is None else apply_rotary(kv[:, 0], rope)
        cache.fill(j, k, kv[:, 1])

    def _folded_kv(self, j: int) -> tuple[torch.Tensor, tuple, float]:
        """(K/V rows of blocks j+1..n_layer's qkv, each scaled by its block's norm1 weight, stacked; the
        view that puts their product in the cache's layout; norm eps). Rebuilt when a weight changed
        (the tensors' version counters and storage)."""
        hit = self._kv_fold.get(j)
        if hit is not None:
            params, key, out = hit
            if key == tuple((t.data_ptr(), t._version) for t in params):
                return out
        deeper = list(self.blocks)[j:]
        attn, C = deeper[0].attn, self.cfg.n_embd
        params = [t for b in deeper for t in (b.norm1.weight, b.attn.qkv.weight)]
        with torch.no_grad():
            weight = torch.cat([b.attn.qkv.weight[C:C + 2 * attn.kv_dim] * b.norm1.weight for b in deeper])
        out = (weight.contiguous(), (len(deeper), 2, 1, attn.n_kv, 1, attn.kv_dim // attn.n_kv), deeper[0].norm1.eps)
        self._kv_fold[j] = (params, tuple((t.data_ptr(), t._version) for t in params), out)
        return out

    def new_cache(self) -> KVCache:
        return KVCache(self.n_layer, self.block_size)


@register_model("r1_lm", family="lm", config=R1LMConfig)
def r1_lm(cfg: R1LMConfig) -> nn.Module:
    """R1-LM: gated global+local attention, early exit, cross-layer fusion, tied weights."""
    return R1LM(cfg)
