"""R1-MM: CNN (deformable late stage) + Transformer text encoder, cross-modal attention both ways,
top-k mixture-of-experts feed-forward, gated fusion of the pooled streams, answer classifier.

    inputs  {"images": (B, 3, H, W), "tokens": (B, T) ids, "mask": (B, T) bool}
    model(inputs)          -> answer logits (B, num_classes)
    model(inputs, targets) -> {"answer", "align", "balance"} losses; targets {"answer": (B,), ...} or (B,)

Losses: answer cross-entropy (optionally weighted per sample by the image-question cosine
alignment clamped to [0.7, 1.0]), InfoNCE between pooled unimodal image and text embeddings
(`align_weight`), and the experts' load-balancing loss (`balance_weight`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1.errors import ConfigError
from r1.models.mm.config import PLACEHOLDER_VOCAB, R1MMConfig
from r1.models.mm.layers import (
    CrossAttention,
    DenseFFN,
    GatedFusion,
    ImageEncoder,
    MoE,
    TextEncoder,
    grid_coords,
    in_static_shapes,
    masked_mean,
    share_images,
)
from r1.registry import register_model


def split_inputs(inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(inputs, dict) or not {"images", "tokens"} <= set(inputs):
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ConfigError(f"mm model inputs: expected a dict with images, tokens and mask; got {got}")
    tokens = inputs["tokens"]
    mask = inputs.get("mask")
    if mask is None:
        mask = torch.ones_like(tokens, dtype=torch.bool)
    return inputs["images"], tokens, mask.bool()


def answer_targets(targets) -> torch.Tensor:
    return targets["answer"] if isinstance(targets, dict) else targets


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between rows of a and b (B, D): row i of each is the other's positive."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def alignment_weights(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample loss weights: cosine(a_i, b_i) clamped to [0.7, 1.0], without gradient."""
    return F.cosine_similarity(a.detach(), b.detach(), dim=-1).clamp(0.7, 1.0)


class CrossLayer(nn.Module):
    """Text attends image tokens, image tokens attend text, then the (MoE or dense) FFN on both."""

    def __init__(self, cfg: R1MMConfig, t2i: CrossAttention, i2t: CrossAttention):
        super().__init__()
        self.t2i, self.i2t = t2i, i2t
        self.norm = nn.LayerNorm(cfg.dim)
        hidden = cfg.ffn_mult * cfg.dim
        self.ffn = (MoE(cfg.dim, hidden, cfg.experts, cfg.top_k, cfg.capacity_factor) if cfg.ffn == "moe"
                    else DenseFFN(cfg.dim, hidden))

    def forward(self, t, v, mask):
        t = t + self.t2i(t, v)
        v = v + self.i2t(v, t, mask)
        if in_static_shapes():  # ONNX export: the FFN on every text token, padding left unchanged
            out, _ = self.ffn(self.norm(torch.cat([t, v], 1)).flatten(0, 1))
            out = out.view(t.shape[0], -1, t.shape[2])
            return torch.where(mask[..., None], t + out[:, :t.shape[1]], t), v + out[:, t.shape[1]:], v.new_zeros(())
        # one routing pass over the real tokens of both streams
        B, T, D = t.shape
        flat = torch.cat([t[mask], v.reshape(-1, D)])
        out, balance = self.ffn(self.norm(flat))
        n_text = int(mask.sum())
        t = t.masked_scatter(mask[..., None], (t[mask] + out[:n_text]))
        v = v + out[n_text:].view_as(v)
        return t, v, balance


class R1MM(nn.Module):
    def __init__(self, cfg: R1MMConfig):
        super().__init__()
        if cfg.num_classes <= 0:
            raise ConfigError("model.num_classes: the answer vocabulary is unknown (0); set it or use an mm data kind")
        self.cfg = cfg
        D = cfg.dim
        self.image = ImageEncoder(cfg.channels, cfg.late_blocks, cfg.deform_layers, cfg.coords)
        self.image_proj = nn.Conv2d(self.image.out_channels, D, 1)
        self.image_pos = nn.Linear(2, D)  # cell coordinates -> position embedding (any grid size)
        self.text = TextEncoder(cfg.vocab_size or PLACEHOLDER_VOCAB, D, cfg.heads, cfg.text_layers,
                                cfg.max_len or 64, cfg.dropout)
        self.film = nn.Linear(D, 2 * D) if cfg.film else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        n_pairs = 1 if cfg.share_cross else cfg.cross_layers
        pairs = [tuple(CrossAttention(D, cfg.heads, cfg.dropout, cfg.qk_norm, cfg.qk_scale) for _ in range(2))
                 for _ in range(n_pairs)]
        self.cross = nn.ModuleList([CrossLayer(cfg, *pairs[0 if cfg.share_cross else i])
                                    for i in range(cfg.cross_layers)])
        self.fusion = GatedFusion(D, cfg.fusion)
        self.norm = nn.LayerNorm(D)
        self.head = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(2 * D, cfg.num_classes))
        self.align_text = nn.Linear(D, D, bias=False)
        self.align_image = nn.Linear(D, D, bias=False)

    def encode(self, inputs) -> dict[str, torch.Tensor]:
        """-> text tokens `t` (B, T, D), image tokens `v` (B, N, D) before and after the cross layers,
        pooled unimodal `text0`/`image0`, fused features `fused`, `balance` loss, `mask`."""
        images, tokens, mask = split_inputs(inputs)
        if tokens.shape[1] > (self.cfg.max_len or tokens.shape[1]):
            tokens, mask = tokens[:, :self.cfg.max_len], mask[:, :self.cfg.max_len]
        fmap = self.image_proj(self.image(images))  # (B, D, h, w)
        B, D, h, w = fmap.shape
        v = fmap.flatten(2).transpose(1, 2) + self.image_pos(grid_coords(h, w, fmap.device)).to(fmap.dtype)
        t = self.text(tokens, mask)
        image0 = v.mean(1)
        v = share_images(v, t.shape[0])
        out = {"text0": masked_mean(t, mask), "image0": share_images(image0, t.shape[0]), "mask": mask,
               "group": t.shape[0] // B}
        if self.film is not None:
            gamma, beta = self.film(out["text0"]).unsqueeze(1).chunk(2, dim=-1)
            v = v * (1 + gamma) + beta
        balance = v.new_zeros(())
        hidden = []
        for layer in self.cross:
            t, v, b = layer(t, v, mask)
            balance = balance + b
            hidden.append((t, v))
        out.update(t=t, v=v, hidden=hidden, balance=balance / len(self.cross))
        out["fused"] = self.norm(self.fusion(masked_mean(t, mask), v.mean(1)))
        return out

    def losses_and_logits(self, inputs, targets) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        cfg = self.cfg
        enc = self.encode(inputs)
        logits = self.head(enc["fused"])
        answer = answer_targets(targets)
        ce = F.cross_entropy(logits, answer, reduction="none", label_smoothing=cfg.label_smoothing)
        za, zb = self.align_text(enc["text0"]), self.align_image(enc["image0"])
        if cfg.align_weighting:
            ce = ce * alignment_weights(za, zb)
        losses = {"answer": ce.mean()}
        if cfg.align_weight > 0:  # one question per image: the other rows of a grouped batch are no negatives
            k = enc["group"]
            losses["align"] = cfg.align_weight * info_nce(za[::k], zb[::k], cfg.align_temp)
        if cfg.ffn == "moe" and cfg.balance_weight > 0:
            losses["balance"] = cfg.balance_weight * enc["balance"]
        return losses, logits

    def forward(self, inputs, targets=None):
        if targets is None:
            return self.head(self.encode(inputs)["fused"])
        return self.losses_and_logits(inputs, targets)[0]


@register_model("r1_mm", family="mm", config=R1MMConfig)
def r1_mm(cfg: R1MMConfig) -> nn.Module:
    """R1-MM: deformable CNN + Transformer text encoder, cross-modal attention, top-k experts, gated fusion."""
    return R1MM(cfg)
