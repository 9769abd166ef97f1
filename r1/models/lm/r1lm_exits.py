"""R1-LM's dynamic depth: exit heads, their training losses, thresholds and the one-token decode path.

Blocks in `exit_layers` are followed by an exit head (own LayerNorm, then the shared, tied LM head),
trained with the mean exit cross-entropy (`exit` loss), and a light exit classifier (MLP on detached
features: normed state, top probability, entropy, drift from the previous exit) trained to predict
that KL(final || exit) < exit_kl_tol (`conf` loss). At inference a token whose confidence reaches its
head's threshold stops; the deeper blocks only compute its keys/values.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1.models.lm.config import R1LMConfig
from r1.models.lm.layers import KVCache, apply_rotary

CONF_STRIDE = 4  # exit classifiers train on every 4th position: plenty for 4k parameters, a quarter of the cost


class ExitHeads:
    """The early-exit part of `R1LM` (a mixin: its modules are the model's own, so checkpoints keep
    their keys). Uses the model's cfg, blocks, fuse, tok_emb, pos_emb, rotary, head and norm_f."""

    def _init_exits(self, cfg: R1LMConfig) -> None:
        """Exit heads after the blocks in `exit_layers` (own LayerNorm, then the shared head) and their
        light exit classifiers."""
        C = cfg.n_embd
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
