"""Training objectives beyond next-token CE: the domain contrastive term and masked-LM pretraining."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from r1.config import DataConfig, from_dict, load_config
from r1.data import build_data
from r1.errors import ConfigError
from r1.models.lm.contrastive import domain_contrastive, mean_pool
from r1.models.lm.masking import MASK, mask_tokens
from r1.registry import build_model
from r1.train.prepare import fill_from_meta

V = 37


# ----------------------------------------------------------------------------- contrastive
def test_contrastive_known_value_and_direction():
    e1, e2 = torch.eye(2)
    z = torch.stack([e1, e1, e2, e2])
    d = torch.tensor([0, 0, 1, 1])
    # every anchor: one positive at cosine 1, two negatives at 0 -> -log(e / (e + 2))
    assert domain_contrastive(z, d, temperature=1.0).item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)
    mixed = torch.stack([e1, e2, e1, e2])  # each sequence closest to the other source
    assert domain_contrastive(mixed, d, 1.0) > domain_contrastive(z, d, 1.0)
    zr = torch.randn(6, 8, requires_grad=True)
    one = domain_contrastive(zr, torch.zeros(6, dtype=torch.long))
    assert one.item() == 0.0 and one.requires_grad  # one source only: nothing to contrast


def test_contrastive_gradient_separates_the_sources():
    torch.manual_seed(1)
    z = torch.randn(8, 4, requires_grad=True)
    d = torch.tensor([0, 1] * 4)
    opt = torch.optim.SGD([z], lr=0.5)
    before = domain_contrastive(z, d).item()
    for _ in range(20):
        opt.zero_grad()
        domain_contrastive(z, d).backward()
        opt.step()
    zn = F.normalize(z.detach(), dim=-1)
    same, other = zn[d == 0] @ zn[d == 0].T, zn[d == 0] @ zn[d == 1].T
    assert domain_contrastive(z, d).item() < before and same.mean() > other.mean()


def test_mean_pool_over_target_positions():
    h = torch.arange(12.0).view(1, 4, 3).repeat(2, 1, 1)
    t = torch.tensor([[-100, -100, 5, 6], [-100, -100, -100, -100]])
    z = mean_pool(h, t)
    torch.testing.assert_close(z[0], h[0, 2:].mean(0))
    torch.testing.assert_close(z[1], h[1].mean(0))  # no target: every position


def test_model_contrastive_loss_key_and_requirements():
    m = build_model("r1_lm", flavor="tiny", num_classes=V, contrastive_weight=0.5)
    x = torch.randint(0, V, (6, 16))
    y = x.roll(-1, 1)
    losses = m({"idx": x, "domain": torch.tensor([0, 0, 0, 1, 1, 1])}, y)
    assert set(losses) == {"lm", "exit", "conf", "contrastive"} and losses["contrastive"] > 0
    sum(losses.values()).backward()
    assert m.tok_emb.weight.grad is not None
    with pytest.raises(ConfigError, match="replay_labels"):
        m(x, y)
    plain = build_model("r1_lm", flavor="tiny", num_classes=V)
    assert "contrastive" not in plain({"idx": x, "domain": torch.zeros(6)}, y)


def _data(**kw):
    return build_data(from_dict(DataConfig, kw, "data"), 0)


def _text(tmp_path):
    text = "".join(chr(97 + (i * 7 + i // 13) % 26) for i in range(6000))
    (tmp_path / "a.txt").write_text(text)
    return str(tmp_path / "a.txt")


def test_replay_labels_mark_replayed_samples(tmp_path):
    path = _text(tmp_path)
    (tmp_path / "old.txt").write_text("".join("abcde"[(i * i) % 5] for i in range(3000)))
    b = _data(name="text", path=path, block_size=16, dedup="none", cache_dir=str(tmp_path / "c"),
              replay=str(tmp_path / "old.txt"), replay_ratio=0.5, replay_size=100, replay_labels=True)
    items = [b.train[i] for i in range(64)]
    tok = __import__("r1.models.lm.tokenizer", fromlist=["x"]).tokenizer_from_dict(b.meta["tokenizer"])
    for inputs, _ in items:  # replayed windows are those of the a-e corpus
        assert bool(inputs["domain"]) == (set(tok.decode(inputs["idx"].tolist())) <= set("abcde"))
    batch = default_collate(items)
    assert batch[0]["idx"].shape == (64, 16) and 10 < int(batch[0]["domain"].sum()) < 54
    with pytest.raises(ConfigError, match="replay_labels"):
        _data(name="text", path=path, block_size=16, dedup="none", cache_dir=str(tmp_path / "c"), replay_labels=True)


# ----------------------------------------------------------------------------- masked LM
def test_mask_tokens_targets_only_at_chosen_positions():
    ids = torch.randint(0, 30, (4000,))
    g = torch.Generator().manual_seed(0)
    x, y = mask_tokens(ids, mask_id=31, vocab_size=32, prob=0.15, generator=g)
    chosen = y != -100
    assert 0.13 < chosen.float().mean() < 0.17
    assert torch.equal(y[chosen], ids[chosen]) and torch.equal(x[~chosen], ids[~chosen])
    share_masked = (x[chosen] == 31).float().mean()
    assert 0.75 < share_masked < 0.85
    one = mask_tokens(torch.arange(5), 9, 10, prob=0.01)[1]
    assert (one != -100).sum() >= 1  # at least one target per window


@pytest.mark.parametrize("name", ["r1_lm", "gpt"])
def test_mlm_attention_is_bidirectional(name):
    m = build_model(name, flavor="tiny", num_classes=V, objective="mlm").eval()
    T = m.block_size
    x = torch.randint(0, V, (1, T))
    x2 = x.clone()
    x2[0, -1] = (x2[0, -1] + 1) % V  # change only the last token
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert not torch.allclose(a[0, 0], b[0, 0], atol=1e-5)  # the first position sees it
    with pytest.raises(ValueError, match="mlm"):
        m.forward_cached(x[:, :4], m.new_cache())


def test_mlm_local_branch_is_a_symmetric_band():
    m = build_model("r1_lm", flavor="tiny", num_classes=V, objective="mlm").eval()
    attn = m.blocks[0].attn
    W, T, hs = attn.window, 24, 16
    q, k, v = (torch.randn(1, 2, T, hs) for _ in range(3))
    _, loc = attn.attend(q, k, v)
    i = 10
    keys = slice(i - W + 1, i + W)  # |i - j| < W
    s = (q[:, :, i:i + 1] @ k[:, :, keys].transpose(-1, -2)) / math.sqrt(hs)
    torch.testing.assert_close(loc[:, :, i:i + 1], s.softmax(-1) @ v[:, :, keys], atol=1e-5, rtol=0)


def test_mlm_loss_only_on_masked_positions():
    m = build_model("r1_lm", flavor="tiny", num_classes=V, objective="mlm", exit_weight=0.0)
    ids = torch.randint(0, V - 1, (2, 32))
    x, y = zip(*[mask_tokens(r, V - 1, V, 0.2, torch.Generator().manual_seed(i)) for i, r in enumerate(ids)])
    x, y = torch.stack(x), torch.stack(y)
    loss = m(x, y)["lm"]
    logits = m(x)
    keep = y != -100
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], y[keep]))
    logits.retain_grad()
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100).backward()
    assert (logits.grad[~keep] == 0).all() and (logits.grad[keep] != 0).any()


def test_mlm_data_and_model_objective_from_the_data(tmp_path):
    b = _data(name="text", path=_text(tmp_path), block_size=16, dedup="none", cache_dir=str(tmp_path / "c"),
              objective="mlm")
    assert b.meta["objective"] == "mlm" and b.meta["chars_per_token"] == 0.0
    tok = __import__("r1.models.lm.tokenizer", fromlist=["x"]).tokenizer_from_dict(b.meta["tokenizer"])
    mask_id = tok.token_to_id(MASK)
    x, y = b.train[3]
    keep = y != -100
    assert keep.any() and (~keep).any() and (x[keep] == mask_id).any() and not (x[~keep] == mask_id).any()
    assert all(torch.equal(a, c) for a, c in zip(b.val[2], b.val[2]))  # fixed validation masks
    cfg = load_config(None, ["model.name=r1_lm", "model.flavor=tiny"])
    assert fill_from_meta(cfg.model, b.meta).objective == "mlm"
    with pytest.raises(ConfigError, match="causal only"):
        _data(name="instruct", block_size=96, cache_dir=str(tmp_path), objective="mlm")


def test_mlm_pretraining_through_the_trainer(tmp_path):
    import json

    from r1.train import fit
    metrics = fit(load_config(None, [
        "model.name=r1_lm", "model.flavor=tiny", "data.name=text", f"data.path={_text(tmp_path)}", "data.objective=mlm",
        "data.block_size=32", "data.batch_size=8", "data.dedup=none", f"data.cache_dir={tmp_path / 'c'}",
        "train.max_steps=3", "train.eval_every=3", "run.threads=1", "train.amp='off'", f"run.dir={tmp_path / 'r'}"]))
    info = json.loads((tmp_path / "r" / "model.json").read_text())
    assert info["model"]["objective"] == "mlm" and math.isfinite(metrics["val/loss"]) and "val/bpc" not in metrics


def test_contrastive_domain_adaptation_through_the_trainer(tmp_path):
    from r1.train import fit
    (tmp_path / "old.txt").write_text("".join("abcde"[(i * i) % 5] for i in range(3000)))
    fit(load_config(None, [
        "model.name=r1_lm", "model.flavor=tiny", "model.contrastive_weight=0.5", "data.name=text",
        f"data.path={_text(tmp_path)}", f"data.replay={tmp_path / 'old.txt'}", "data.replay_ratio=0.5",
        "data.replay_labels=true", "data.block_size=32", "data.batch_size=8", "data.dedup=none",
        f"data.cache_dir={tmp_path / 'c'}", "train.max_steps=3", "train.eval_every=3", "train.log_every=1",
        "run.threads=1", "train.amp='off'", f"run.dir={tmp_path / 'r'}"]))
    rows = [line for line in (tmp_path / "r" / "history.jsonl").read_text().splitlines() if "train/contrastive" in line]
    assert len(rows) == 3
