"""R1-MM's pieces: top-k experts, the load-balancing loss, gated fusion, alignment losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from r1.models.mm.layers import GatedFusion, MoE
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
    assert fusion.last_gate.shape == (3, 6)
    torch.testing.assert_close(GatedFusion(6, "sum")(h, v), h + v)


def test_alignment_weights_and_info_nce():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    torch.testing.assert_close(alignment_weights(a, b), torch.tensor([1.0, 0.7, 0.8]))
    matched = info_nce(torch.eye(4), torch.eye(4), 0.1)
    shuffled = info_nce(torch.eye(4), torch.eye(4).roll(1, 0), 0.1)
    assert float(matched) < 0.01 < float(shuffled)
