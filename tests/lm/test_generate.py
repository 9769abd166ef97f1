"""Generation: the KV cache reproduces full recomputation; sampling filters; streaming."""
import pytest
import torch

from r1.models.lm.generate import generate, generate_stream, sample_next, stream_text
from r1.models.lm.tokenizer import CharTokenizer
from r1.registry import build_model, list_models

V = 37


@pytest.mark.parametrize("name", list_models(family="lm"))
def test_kv_cache_equals_full_recompute(name):
    m = build_model(name, flavor="tiny", num_classes=V).eval()
    prompt = torch.randint(0, V, (2, 5))
    n = m.block_size - 5  # stays inside one window
    a = generate(m, prompt, n, temperature=0.0, use_cache=True)
    b = generate(m, prompt, n, temperature=0.0, use_cache=False)
    assert torch.equal(a, b)
    # logits too, not only argmax
    cache = m.new_cache()
    step = m.forward_cached(a[:, :10], cache)
    for t in range(10, 20):
        assert torch.allclose(step, m(a[:, :t])[:, -1], atol=1e-4)
        step = m.forward_cached(a[:, t:t + 1], cache)


@pytest.mark.parametrize("kw", [{}, {"n_kv_head": 1}, {"n_kv_head": 1, "pos": "learned"},
                                {"n_kv_head": 1, "exit_criterion": "state"}, {"exit_criterion": "maxprob"}])
def test_kv_cache_equals_full_recompute_with_early_exit(kw):
    torch.manual_seed(0)
    m = build_model("r1_lm", flavor="tiny", num_classes=V, **kw).eval()
    # the exit heads share the LM head; sharpen it so that some tokens exit and some do not
    with torch.no_grad():
        m.tok_emb.weight.mul_(40)
    prompt = torch.randint(0, V, (1, 4))
    for thr in (0.5, 0.4, 0.3, 0.2, 0.1):  # greedy decoding settles on one token: the first threshold it exits at
        stats_c, stats_f = {}, {}
        a = generate(m, prompt, 24, temperature=0.0, use_cache=True, exit_threshold=thr, stats=stats_c)
        if stats_c["layers"] < stats_c["tokens"] * m.n_layer:
            break
    b = generate(m, prompt, 24, temperature=0.0, use_cache=False, exit_threshold=thr, stats=stats_f)
    assert torch.equal(a, b)
    assert stats_c["layers"] == pytest.approx(stats_f["layers"])
    assert stats_c["layers"] < stats_c["tokens"] * m.n_layer  # some blocks were skipped
    # prefill + steps with exits equal the parallel early-exit forward at every position
    cache = m.new_cache()
    m.forward_cached(a[:, :6], cache, thr)
    for t in range(6, 20):
        step = m.forward_cached(a[:, t:t + 1], cache, thr)
        assert torch.allclose(step, m(a[:, :t + 1], exit_threshold=thr)[:, -1], atol=1e-4)


def test_generation_beyond_block_size():
    m = build_model("gpt", flavor="tiny", num_classes=V).eval()
    out = generate(m, torch.randint(0, V, (1, 3)), 3 * m.block_size, temperature=1.0, top_k=5)
    assert out.shape == (1, 3 + 3 * m.block_size)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, temperature=0.0).item() == 1
    assert all(sample_next(logits, 1.0, top_k=1, generator=g).item() == 1 for _ in range(20))
    assert all(sample_next(logits, 1.0, top_p=0.01, generator=g).item() == 1 for _ in range(20))
    drawn = {sample_next(logits, 1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert drawn == {1, 3}
    drawn = {sample_next(logits, 1.0, top_p=0.6, generator=g).item() for _ in range(200)}
    assert drawn == {1, 3}  # p(1) ~ 0.49 < 0.6, so the second token is needed and the rest are cut


def test_stream_text_pieces_concatenate():
    tok = CharTokenizer("abcdefgh ")
    m = build_model("r1_lm", flavor="tiny", num_classes=tok.vocab_size).eval()
    pieces = list(stream_text(m, tok, "abc", 20, temperature=0.0))
    ids = generate(m, torch.tensor([tok.encode("abc")]), 20, temperature=0.0)
    assert len(pieces) == 20
    assert "".join(pieces) == tok.decode(ids[0, 3:].tolist())


def test_eos_stops_stream():
    m = build_model("gpt", flavor="tiny", num_classes=V).eval()
    prompt = torch.randint(0, V, (1, 3))
    free = generate(m, prompt, 30, temperature=0.0)[0, 3:].tolist()
    eos = free[5]
    out = [t.item() for t in generate_stream(m, prompt, 30, temperature=0.0, eos_id=eos)]
    assert out == free[: free.index(eos) + 1]  # stops right after the first end token


def test_decode_path_fills_skipped_blocks_like_the_parallel_pass_and_follows_weight_changes():
    """The batch-1 decode step (R1LM._decode_one): every token leaves at the first head, the skipped
    blocks' keys/values come from the folded matmul; they must equal what the parallel early-exit
    pass stores, also after the weights change (the folded copy is rebuilt)."""
    torch.manual_seed(0)
    m = build_model("r1_lm", flavor="tiny", num_classes=V, n_kv_head=1, exit_criterion="state").eval()
    thr = [0.0] + [1.01] * (len(m.exit_layers) - 1)  # always leave at block 1
    x = torch.randint(0, V, (1, 12))
    for _ in range(2):
        cache = m.new_cache()
        m.forward_cached(x[:, :4], cache, thr)
        for t in range(4, 12):
            step = m.forward_cached(x[:, t:t + 1], cache, thr)
            assert m.last_layers_run.item() == 1
            assert torch.allclose(step, m(x[:, :t + 1], exit_threshold=thr)[:, -1], atol=1e-5)
        ref = m.new_cache()
        m._run(x, ref, thr)  # parallel pass, same exits
        for layer in range(m.n_layer):
            assert torch.allclose(cache.k[layer][:, :, :12], ref.k[layer][:, :, :12], atol=1e-5)
            assert torch.allclose(cache.v[layer][:, :, :12], ref.v[layer][:, :, :12], atol=1e-5)
        with torch.no_grad():  # change a deeper block: the folded K/V weights must follow
            m.blocks[2].norm1.weight.mul_(1.5)
            m.blocks[1].attn.qkv.weight.add_(0.1)
