"""Every registered lm model: forward/backward, loss keys, causality; R1-LM specifics."""
import math

import pytest
import torch

from r1.registry import build_model, list_models

LM_MODELS = list_models(family="lm")
V = 37


def tiny(name, **kw):
    return build_model(name, flavor="tiny", num_classes=V, **kw)


def test_lm_family_registered():
    assert {"gpt", "r1_lm"} <= set(LM_MODELS)


@pytest.mark.parametrize("name", LM_MODELS)
def test_forward_backward_losses(name):
    m = tiny(name)
    x = torch.randint(0, V, (2, m.block_size))
    y = x.roll(-1, 1)
    y[:, :5] = -100  # ignored targets
    losses = m(x, y)
    expected = {"lm", "exit", "conf"} if name == "r1_lm" else {"lm"}
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert abs(losses["lm"].item() - math.log(V)) < 1.0  # near-uniform at init
    sum(losses.values()).backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    m.eval()
    logits = m(x)
    assert logits.shape == (2, m.block_size, V)


@pytest.mark.parametrize("name", LM_MODELS)
def test_weights_are_tied(name):
    m = tiny(name)
    assert m.head.weight is m.tok_emb.weight


@pytest.mark.parametrize("name", LM_MODELS)
def test_causal_no_token_sees_the_future(name):
    m = tiny(name).eval()
    T = m.block_size
    x = torch.randint(0, V, (1, T))
    x2 = x.clone()
    x2[0, T // 2:] = (x2[0, T // 2:] + 1) % V  # change only the second half
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.allclose(a[0, :T // 2], b[0, :T // 2], atol=1e-5)
    assert not torch.allclose(a[0, T // 2:], b[0, T // 2:], atol=1e-5)


def test_grouped_query_attention_shares_key_value_heads():
    from r1.errors import ConfigError
    full, gqa = tiny("r1_lm"), tiny("r1_lm", n_kv_head=1)  # tiny: 2 heads of 16, 32 channels
    C, hs, nh = 32, 16, 2
    assert full.blocks[0].attn.qkv.weight.shape[0] == 3 * C + nh
    assert gqa.blocks[0].attn.qkv.weight.shape[0] == C + 2 * hs + nh  # one key and one value head
    # equal to multi-head attention whose key/value heads are copies of the shared one
    with torch.no_grad():
        for bf, bg in zip(full.blocks, gqa.blocks):
            wq, wk, wv, wg = bg.attn.qkv.weight.split([C, hs, hs, nh])
            bf.attn.qkv.weight.copy_(torch.cat([wq, wk, wk, wv, wv, wg]))
        gqa_state = {k: v for k, v in gqa.state_dict().items() if "attn.qkv" not in k}
        full.load_state_dict(gqa_state, strict=False)
    x = torch.randint(0, V, (2, full.block_size))
    with torch.no_grad():
        torch.testing.assert_close(full.eval()(x), gqa.eval()(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="n_kv_head"):
        build_model("r1_lm", flavor="tiny", num_classes=V, n_head=4, n_kv_head=3)


def test_causal_with_early_exit():
    m = tiny("r1_lm").eval()
    T = m.block_size
    x = torch.randint(0, V, (1, T))
    x2 = x.clone()
    x2[0, T // 2:] = (x2[0, T // 2:] + 1) % V
    with torch.no_grad():
        a, b = m(x, exit_threshold=0.05), m(x2, exit_threshold=0.05)
    assert torch.allclose(a[0, :T // 2], b[0, :T // 2], atol=1e-5)


def test_sliding_window_sees_only_window():
    m = tiny("r1_lm").eval()
    attn = m.blocks[0].attn
    W, T, hs = attn.window, 24, 16
    q, k, v = (torch.randn(1, 2, T, hs) for _ in range(3))
    glob, loc = attn.attend(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 0], v2[:, :, 0] = 5.0, -5.0  # change the first key/value only
    glob2, loc2 = attn.attend(q, k2, v2)
    # local: positions >= W no longer see key 0; positions < W do
    assert torch.allclose(loc[:, :, W:], loc2[:, :, W:], atol=1e-6)
    assert not torch.allclose(loc[:, :, W - 1], loc2[:, :, W - 1], atol=1e-4)
    assert not torch.allclose(glob[:, :, -1], glob2[:, :, -1], atol=1e-4)  # global still does
    # local attention at position t equals softmax over exactly the last W keys
    t = T - 1
    s = (q[:, :, t:t + 1] @ k[:, :, t - W + 1:t + 1].transpose(-1, -2)) / math.sqrt(hs)
    ref = s.softmax(-1) @ v[:, :, t - W + 1:t + 1]
    assert torch.allclose(loc[:, :, t:t + 1], ref, atol=1e-5)


def test_early_exit_thresholds_and_layer_counts():
    m = tiny("r1_lm").eval()
    x = torch.randint(0, V, (2, m.block_size))
    with torch.no_grad():
        full = m(x)
        assert torch.equal(m.last_layers_run, torch.full_like(m.last_layers_run, m.n_layer))
        never = m(x, exit_threshold=1.01)  # no token can pass: full depth
        assert torch.equal(m.last_layers_run, torch.full_like(m.last_layers_run, m.n_layer))
        first = m.exit_layers[0]
        always = m(x, exit_threshold=0.0)  # every token exits at the first exit head
        assert torch.equal(m.last_layers_run, torch.full_like(m.last_layers_run, first))
        exit_logits = m.head(m.exit_norms[str(first)](m.blocks[0](m.tok_emb(x), m.rotary.cis(0, x.shape[1]))))
    assert torch.allclose(always, exit_logits, atol=1e-5)
    assert torch.allclose(full, never, atol=1e-6)


def test_fusion_and_config_validation():
    from r1.errors import ConfigError
    m = tiny("r1_lm")
    assert len(m.fuse) == m.n_layer - 2
    with pytest.raises(ConfigError, match="exit_layers"):
        build_model("r1_lm", flavor="tiny", num_classes=V, exit_layers=[3])
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("r1_lm", flavor="tiny")


def test_parameter_budgets():
    n = lambda m: sum(p.numel() for p in m.parameters())
    gpt = build_model("gpt", flavor="small", num_classes=65)
    r1 = build_model("r1_lm", flavor="small", num_classes=65)
    assert abs(n(gpt) - n(gpt.pos_emb) - 0.80e6) < 0.01e6  # nanoGPT counts without position embeddings
    assert n(r1) <= 0.85e6


def test_progressive_unfreezing():
    m = build_model("r1_lm", flavor="tiny", num_classes=V, freeze_layers=2, unfreeze_share=0.5)
    frozen = lambda: [not any(p.requires_grad for p in b.parameters()) for b in m.blocks]
    m.on_step_start(0, 100)
    assert frozen() == [True, True, False]
    m.on_step_start(30, 100)  # halfway through the unfreezing share: the upper frozen block is released
    assert frozen() == [True, False, False]
    m.on_step_start(50, 100)
    assert frozen() == [False, False, False]
    assert m.tok_emb.weight.requires_grad


@pytest.mark.parametrize("exit_stride", [1, 2])
def test_batched_exit_losses_match_the_per_head_computation(exit_stride):
    import torch.nn.functional as F

    from r1.models.lm.r1lm_exits import CONF_STRIDE
    m = tiny("r1_lm", exit_stride=exit_stride)
    x = torch.randint(0, V, (2, m.block_size))
    y = x.roll(-1, 1)
    y[:, :5] = -100
    logits, states, _, _ = m._run(x, want_states=True)
    ce, conf = m.exit_losses(states, logits, y)
    logp_f = F.log_softmax(logits.detach(), -1)
    stride = m.cfg.exit_stride  # every stride-th position (stride 2: 1, 3, 5, ...), classifiers every 4th
    pos, sub, prev, ces, bces = slice(stride - 1, None, stride), slice(stride - 1, None, CONF_STRIDE), None, [], []
    valid = (y != -100)[:, sub]
    for j, h in zip(m.exit_layers, states):  # one head at a time, features as at inference
        lg, c, prev = m._exit(j, h, prev)
        ces.append(F.cross_entropy(lg[:, pos].flatten(0, 1), y[:, pos].flatten(), ignore_index=-100))
        safe = ((logp_f.exp() * (logp_f - prev)).sum(-1) < m.cfg.exit_kl_tol).float()
        bces.append(F.binary_cross_entropy_with_logits(c[:, sub][valid], safe[:, sub][valid]))
    torch.testing.assert_close(ce, torch.stack(ces).mean())
    torch.testing.assert_close(conf, torch.stack(bces).mean())
