"""Building blocks of the multimodal models: CNN with deformable late stage, bidirectional text
encoder (R1-LM's rotary embedding and MLP), cross-modal attention, gated fusion, top-k mixture of experts.

Token layout: (B, N, D). Text padding masks are bool (B, T), True on real tokens.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import DeformConv2d

from r1.layers import ConvBNAct, InvertedResidual
from r1.models.lm.layers import MLP, Rotary, apply_rotary

_STATIC = False  # True inside `static_shapes()`


@contextlib.contextmanager
def static_shapes():
    """Shape-static eval forwards for ONNX export (`r1.models.mm.export`): the experts run on every
    token and are mixed with the top-k gates (zero elsewhere), masked token updates are `torch.where`,
    rotary positions are real-valued. Same numbers as the eval forward; training never enters it."""
    global _STATIC
    before, _STATIC = _STATIC, True
    try:
        yield
    finally:
        _STATIC = before


def in_static_shapes() -> bool:
    return _STATIC


# ----------------------------------------------------------------------------- image
class DeformBlock(nn.Module):
    """Residual deformable 3x3 conv (DCNv2): offsets and a modulation mask predicted by a plain 3x3
    conv from the input (zero-initialised: it starts as a regular conv with mask 0.5) -> BN -> act."""

    def __init__(self, channels: int, act: str = "hswish"):
        super().__init__()
        self.offset_mask = nn.Conv2d(channels, 3 * 9, 3, padding=1)  # 2 x 9 offsets + 9 mask logits
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        self.conv = DeformConv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.Hardswish() if act == "hswish" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offset_mask(x).split([18, 9], dim=1)
        return x + self.act(self.bn(self.conv(x, offset, torch.sigmoid(mask))))


class PlainBlock(nn.Module):
    """Residual 3x3 conv-BN-act (the late block when it is not deformable)."""

    def __init__(self, channels: int, act: str = "hswish"):
        super().__init__()
        self.conv = ConvBNAct(channels, channels, 3, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class ImageEncoder(nn.Module):
    """3x3 stride-2 stem, then one stride-2 MobileNetV3 inverted residual per further width
    (75 -> 38 -> 19 -> 10 -> 5 for four widths), one stride-1 inverted residual with squeeze-excite,
    then `late_blocks` residual 3x3 blocks at that resolution, the last `deform_layers` of them
    deformable. `coords`: x, y coordinate channels appended to the input (CoordConv).
    -> feature map (B, C, h, w): the grid of image tokens."""

    def __init__(self, channels: list[int], late_blocks: int, deform_layers: int, coords: bool = False):
        super().__init__()
        self.coords = coords
        layers: list[nn.Module] = [ConvBNAct(5 if coords else 3, channels[0], 3, 2, act="hswish")]
        for c_in, c_out in zip(channels, channels[1:]):
            layers.append(InvertedResidual(c_in, 3 * c_in, c_out, 3, 2, se=False, act="hswish"))
        c = channels[-1]
        layers.append(InvertedResidual(c, 3 * c, c, 3, 1, se=True, act="hswish"))
        layers += [PlainBlock(c) for _ in range(late_blocks - deform_layers)]
        layers += [DeformBlock(c) for _ in range(deform_layers)]
        self.body = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.coords:
            B, _, H, W = images.shape
            xy = grid_coords(H, W, images.device).to(images.dtype).t().reshape(1, 2, H, W).expand(B, -1, -1, -1)
            images = torch.cat([images, xy], 1)
        return self.body(images)


class PlainCNN(nn.Module):
    """The Relation Network paper's CNN: stride-2 3x3 conv-BN-ReLU per width (75 -> 38 -> 19 -> 10 -> 5)."""

    def __init__(self, channels: list[int]):
        super().__init__()
        widths = [3, *channels]
        self.body = nn.Sequential(*[ConvBNAct(a, b, 3, 2) for a, b in zip(widths, widths[1:])])
        self.out_channels = channels[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def share_images(x: torch.Tensor, n: int) -> torch.Tensor:
    """Per-image features (B, ...) -> per-question (n, ...): with n = k * B questions, rows i*k .. i*k+k-1
    ask about image i (a grouped training batch: each image encoded once for its k questions)."""
    b = x.shape[0]
    if n == b:
        return x
    if b == 0 or n % b:
        raise ValueError(f"mm inputs: {n} questions for {b} images; expected a multiple of the images")
    return x.repeat_interleave(n // b, 0)


def grid_coords(h: int, w: int, device=None) -> torch.Tensor:
    """(h * w, 2) cell-centre coordinates in [-1, 1], row-major (x, y)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)


# ----------------------------------------------------------------------------- text
class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with rotary positions and a key padding mask."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cis: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).unbind(2)  # each (B, T, nh, hs)
        rotate = rotate_real if _STATIC else apply_rotary
        q, k = rotate(q, cis[:, None]), rotate(k, cis[:, None])
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask[:, None, None, :])
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.mlp = MLP(dim, "gelu", bias=True, dropout=dropout)

    def forward(self, x, cis, mask):
        x = x + self.attn(self.norm1(x), cis, mask)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Token ids (B, T) + mask -> contextual token features (B, T, D): embedding, then bidirectional
    pre-norm Transformer blocks (rotary positions; R1-LM's MLP), final LayerNorm."""

    def __init__(self, vocab_size: int, dim: int, heads: int, layers: int, max_len: int, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.rotary = Rotary(dim // heads, max_len=max(max_len, 1))
        self.blocks = nn.ModuleList([EncoderBlock(dim, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(tokens))
        cis = real_cis(self.rotary, tokens.shape[1]) if _STATIC else self.rotary.cis(0, tokens.shape[1])
        for block in self.blocks:
            x = block(x, cis, mask)
        return self.norm(x)


def real_cis(rotary: Rotary, t: int) -> torch.Tensor:
    """Rotary's rotations of positions 0..t-1 as real (T, hs/2, 2) [cos, sin] (ONNX has no complex type)."""
    angle = torch.outer(torch.arange(t, device=rotary.inv_freq.device, dtype=torch.float32), rotary.inv_freq)
    return torch.stack([angle.cos(), angle.sin()], -1)


def rotate_real(x: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
    """`apply_rotary` with real [cos, sin] pairs (`real_cis`): adjacent head dimensions (a, b) ->
    (a cos - b sin, a sin + b cos)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = cs[..., 0], cs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2).type_as(x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens (B, N, D) -> (B, D), padding excluded."""
    if mask is None:
        return x.mean(1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


# ----------------------------------------------------------------------------- cross-modal
class CrossAttention(nn.Module):
    """Queries from one modality attend keys/values of the other (pre-norm, residual added by the caller).

    `qk_norm`: queries and keys are L2-normalised per head and their dot product (a cosine in [-1, 1])
    is multiplied by a learned per-head scale that starts at `qk_scale` (QK-norm with a learned
    temperature, Henry et al. 2020, "Query-Key Normalization for Transformers"; ViT-22B normalises q and
    k the same way). The attention then starts sharp whatever the initial projections, instead of
    near uniform, and learns how sharp to be."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, qk_norm: bool = False, qk_scale: float = 10.0):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.drop = nn.Dropout(dropout)
        self.scale = nn.Parameter(torch.full((heads, 1, 1), float(qk_scale))) if qk_norm else None
        self.last_weights: torch.Tensor | None = None  # set when `keep_weights` (distillation of attention maps)
        self.keep_weights = False

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        hs = C // self.heads
        q = self.q(self.norm_q(x)).view(B, N, self.heads, hs).transpose(1, 2)
        k, v = self.kv(self.norm_kv(ctx)).view(B, ctx.shape[1], 2, self.heads, hs).permute(2, 0, 3, 1, 4)
        if self.scale is None:
            temperature = 1.0 / math.sqrt(hs)
        else:  # cosine logits times the learned scale (folded into q)
            q, k = F.normalize(q, dim=-1) * self.scale, F.normalize(k, dim=-1)
            temperature = 1.0
        attn_mask = ctx_mask[:, None, None, :] if ctx_mask is not None else None
        if self.keep_weights:
            logits = q @ k.transpose(-1, -2) * temperature
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            self.last_weights = logits.softmax(-1)
            y = self.last_weights @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=temperature)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, N, C)))


class GatedFusion(nn.Module):
    """The seed's fusion of pooled text h and image v (each (B, D)):
    a = sigmoid(W [h; v] + b), fused = a * h + (1 - a) * v. `mode="sum"`: h + v (the ablation)."""

    def __init__(self, dim: int, mode: str = "gate"):
        super().__init__()
        self.mode = mode
        self.gate = nn.Linear(2 * dim, dim) if mode == "gate" else None

    def forward(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return h + v
        a = torch.sigmoid(self.gate(torch.cat([h, v], -1)))
        return a * h + (1 - a) * v


# ----------------------------------------------------------------------------- experts
class MoE(nn.Module):
    """Top-k mixture-of-experts feed-forward over tokens (N, D).

    A linear router scores E experts per token; the k best are run and their outputs mixed with
    the renormalised router probabilities. Each expert takes at most
    capacity = ceil(capacity_factor * N * k / E) tokens in training (first come, first served over
    the k choices in order); a token over capacity gets nothing from that expert. The load-balancing
    loss (Switch Transformer) is E * sum_e f_e * P_e with f_e the share of routed slots that went
    to expert e and P_e its mean router probability: 1.0 for a uniform router, larger when skewed.
    Each token costs k expert MLPs instead of E: `flops_ratio` = k / E of a dense layer with all experts.
    """

    def __init__(self, dim: int, hidden: int, experts: int, top_k: int, capacity_factor: float = 1.25):
        super().__init__()
        self.experts, self.top_k, self.capacity_factor = experts, top_k, capacity_factor
        self.router = nn.Linear(dim, experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(experts, dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(experts, hidden))
        self.w2 = nn.Parameter(torch.empty(experts, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(experts, dim))
        for w in (self.w1, self.w2):
            nn.init.normal_(w, std=1.0 / math.sqrt(w.shape[1]))
        self.stats: dict[str, torch.Tensor] = {}

    @property
    def flops_ratio(self) -> float:
        return self.top_k / self.experts

    def capacity(self, n_tokens: int) -> int:
        """Tokens one expert takes in training; evaluation has no limit, so that an answer never
        depends on the other samples of its batch."""
        if self.capacity_factor <= 0 or not self.training:
            return n_tokens
        return max(1, math.ceil(self.capacity_factor * n_tokens * self.top_k / self.experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, D) -> (output (N, D), balance loss scalar)."""
        if _STATIC:
            return self.forward_static(x), x.new_zeros(())
        n = x.shape[0]
        probs = self.router(x).float().softmax(-1)  # (N, E)
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # (N, k)
        gates = (top_p / top_p.sum(-1, keepdim=True)).to(x.dtype)
        cap = self.capacity(n)
        out = torch.zeros_like(x)
        slots = top_i.t().reshape(-1)  # choice-major: every token's first choice before any second choice
        tokens = torch.arange(n, device=x.device).repeat(self.top_k)
        slot_gates = gates.t().reshape(-1)
        load = torch.zeros(self.experts, device=x.device)
        for e in range(self.experts):
            pick = (slots == e).nonzero(as_tuple=True)[0][:cap]
            load[e] = pick.numel()
            if pick.numel() == 0:
                continue
            tok = tokens[pick]
            h = F.gelu(torch.addmm(self.b1[e], x[tok], self.w1[e]))
            out.index_add_(0, tok, torch.addmm(self.b2[e], h, self.w2[e]) * slot_gates[pick, None])
        share = torch.bincount(slots, minlength=self.experts).float() / max(slots.numel(), 1)
        balance = self.experts * (share * probs.mean(0)).sum()
        self.stats = {"load": load.detach(), "dropped": (n * self.top_k - load.sum()).detach()}
        return out, balance

    def forward_static(self, x: torch.Tensor) -> torch.Tensor:
        """The eval forward in fixed shapes (ONNX export): every expert on every token, weighted by
        the token's renormalised top-k gate (0 for the experts it did not pick). Equal to `forward`
        in eval mode, where capacity does not limit (see `capacity`); E/k times its expert FLOPs."""
        if self.training:
            raise RuntimeError("MoE.forward_static is the eval forward (capacity does not apply)")
        probs = self.router(x).float().softmax(-1)  # (N, E)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True)).to(x.dtype)
        h = F.gelu(torch.matmul(x.unsqueeze(0), self.w1) + self.b1[:, None])  # (E, N, hidden)
        y = torch.matmul(h, self.w2) + self.b2[:, None]  # (E, N, D)
        return (y * gates.t().unsqueeze(-1)).sum(0)


class DenseFFN(nn.Module):
    """The dense alternative to `MoE` (same call signature; balance loss 0)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.down(F.gelu(self.up(x))), x.new_zeros(())
