"""R1-MM's pieces: top-k experts, the load-balancing loss, gated fusion, alignment losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from r1.models.mm.layers import CrossAttention, GatedFusion, MoE, static_shapes
from r1.models.mm.r1mm import alignment_weights, info_nce


def expert(moe: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x @ moe.w1[e] + moe.b1[e]) @ moe.w2[e] + moe.b2[e]


def test_moe_runs_the_top_k_experts_per_token():
    torch.manual_seed(0)
    moe = MoE(8, 16, experts=4, top_k=2, capacity_factor=0)  # no capacity limit
    x = torch.randn(10, 8)
    out, _ = moe(x)
    probs = moe.router(x).softmax(-1)
    top_p, top_i = probs.topk(2, -1)
    gates = top_p / top_p.sum(-1, keepdim=True)
    ref = torch.stack([sum(gates[n, j] * expert(moe, int(top_i[n, j]), x[n]) for j in range(2)) for n in range(10)])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert int(moe.stats["load"].sum()) == 10 * 2 and int(moe.stats["dropped"]) == 0
    assert moe.flops_ratio == 0.5


def test_moe_capacity_drops_overflow_tokens():
    moe = MoE(4, 8, experts=4, top_k=1, capacity_factor=1.0)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[2, 0] = 10.0  # every token with x[0] > 0 prefers expert 2
    x = torch.randn(40, 4).abs()
    out, _ = moe(x)
    cap = moe.capacity(40)
    assert cap == 10 and int(moe.stats["load"][2]) == cap and int(moe.stats["dropped"]) == 40 - cap
    assert (out.abs().sum(1) == 0).sum() == 40 - cap  # dropped tokens get nothing (the residual carries them)


def test_balance_loss_is_minimal_for_a_uniform_router():
    moe = MoE(8, 8, experts=4, top_k=2)
    x = torch.randn(64, 8)
    with torch.no_grad():
        moe.router.weight.zero_()
    with torch.no_grad():
        _, uniform = moe(x)
    assert abs(float(uniform) - 1.0) < 1e-6  # E * sum_e f_e / E
    with torch.no_grad():
        moe.router.weight.normal_(std=3.0)
    with torch.no_grad():
        _, skewed = moe(x)
    assert float(skewed) > float(uniform)


def test_gated_fusion_is_the_formula():
    torch.manual_seed(0)
    fusion = GatedFusion(6)
    h, v = torch.randn(3, 6), torch.randn(3, 6)
    a = torch.sigmoid(torch.cat([h, v], -1) @ fusion.gate.weight.t() + fusion.gate.bias)
    torch.testing.assert_close(fusion(h, v), a * h + (1 - a) * v)
    torch.testing.assert_close(GatedFusion(6, "sum")(h, v), h + v)


def test_alignment_weights_and_info_nce():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    torch.testing.assert_close(alignment_weights(a, b), torch.tensor([1.0, 0.7, 0.8]))
    matched = info_nce(torch.eye(4), torch.eye(4), 0.1)
    shuffled = info_nce(torch.eye(4), torch.eye(4).roll(1, 0), 0.1)
    assert float(matched) < 0.01 < float(shuffled)


def test_qk_norm_attention_is_cosine_times_a_learned_scale():
    torch.manual_seed(0)
    attn = CrossAttention(16, 2, qk_norm=True, qk_scale=10.0).eval()
    assert attn.scale.requires_grad and attn.scale.shape == (2, 1, 1) and float(attn.scale[0]) == 10.0
    x, ctx = torch.randn(3, 4, 16), torch.randn(3, 25, 16)
    mask = torch.ones(3, 25, dtype=torch.bool)
    mask[0, 20:] = False
    attn.keep_weights = True
    y_ref = attn(x, ctx, mask)
    w = attn.last_weights  # (B, heads, N, ctx)
    q = F.normalize(attn.q(attn.norm_q(x)).view(3, 4, 2, 8).transpose(1, 2), dim=-1)
    k = F.normalize(attn.kv(attn.norm_kv(ctx))[..., :16].view(3, 25, 2, 8).transpose(1, 2), dim=-1)
    logits = (10.0 * q @ k.transpose(-1, -2)).masked_fill(~mask[:, None, None], float("-inf"))
    assert torch.allclose(w, logits.softmax(-1), atol=1e-6)
    assert float(w[0, :, :, 20:].sum()) == 0.0
    attn.keep_weights = False
    assert torch.allclose(attn(x, ctx, mask), y_ref, atol=1e-5)  # the fused kernel: the same numbers
    # sharper than the default attention at initialisation, and the scale is trained
    plain = CrossAttention(16, 2).eval()
    plain.load_state_dict({k: v for k, v in attn.state_dict().items() if k != "scale"})
    plain.keep_weights = True
    plain(x, ctx)
    attn.keep_weights = True
    attn(x, ctx)
    assert attn.last_weights.amax(-1).mean() > plain.last_weights.amax(-1).mean()
    attn.train()
    attn(x, ctx, mask).sum().backward()
    assert attn.scale.grad is not None and attn.scale.grad.abs().sum() > 0
    with static_shapes():
        assert attn.eval()(x, ctx, mask).shape == (3, 4, 16)
