"""Continual learning: the EWC penalty and Fisher, alone and through the trainer."""
import json

import pytest
import torch
import torch.nn as nn

from r1.config import load_config
from r1.errors import ConfigError
from r1.train import fit
from r1.train.ewc import EWCPenalty, estimate_fisher, load_ewc


class Regressor(nn.Module):
    """y_hat = w . x + b with the trainer's contract: model(x, y) -> {"mse": (y_hat - y)^2 mean}."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x, y):
        return {"mse": (self.lin(x).squeeze(-1) - y).square().mean()}


def _fisher_anchor(model, fisher_values):
    fisher = {n: torch.full_like(p, v) for (n, p), v in zip(model.named_parameters(), fisher_values)}
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    return fisher, theta


def test_ewc_penalty_is_zero_at_the_anchor_and_matches_a_hand_computation():
    m = Regressor()
    with torch.no_grad():
        m.lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        m.lin.bias.fill_(0.5)
    fisher, theta = _fisher_anchor(m, [3.0, 0.25])
    fisher["lin.weight"] = torch.tensor([[3.0, 1.0]])
    pen = EWCPenalty(m, fisher, theta, lam=2.0)
    assert pen().item() == 0.0
    with torch.no_grad():  # move away: w = (1.5, 1.0), b = 1.5
        m.lin.weight.copy_(torch.tensor([[1.5, 1.0]]))
        m.lin.bias.fill_(1.5)
    # lambda/2 * (3 * 0.5^2 + 1 * 1^2 + 0.25 * 1^2) = 1 * (0.75 + 1 + 0.25) = 2.0
    assert pen().item() == pytest.approx(2.0)


def test_ewc_gradient_pulls_towards_the_anchor():
    m = Regressor()
    fisher, theta = _fisher_anchor(m, [2.0, 0.5])
    pen = EWCPenalty(m, fisher, theta, lam=3.0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    dist0 = sum((p - theta[n]).square().sum() for n, p in m.named_parameters()).item()
    pen().backward()
    for n, p in m.named_parameters():  # d/dtheta = lambda * F * (theta - theta*)
        torch.testing.assert_close(p.grad, 3.0 * fisher[n] * (p.detach() - theta[n]))
    with torch.no_grad():
        for p in m.parameters():
            p.sub_(0.1 * p.grad)
    dist1 = sum((p - theta[n]).square().sum() for n, p in m.named_parameters()).item()
    assert dist1 < dist0


def test_fisher_is_the_mean_squared_per_sample_gradient():
    m = Regressor()
    xs, ys = torch.randn(6, 2), torch.randn(6)
    data = list(zip(xs, ys))
    collate = torch.utils.data.default_collate
    fisher = estimate_fisher(m, data, collate, samples=6, to_device=lambda b: b)
    w, b = m.lin.weight.detach()[0], m.lin.bias.detach()[0]
    r = xs @ w + b - ys  # residuals; d(r^2)/dw = 2 r x, d(r^2)/db = 2 r
    torch.testing.assert_close(fisher["lin.weight"][0], (2 * r[:, None] * xs).square().mean(0))
    torch.testing.assert_close(fisher["lin.bias"][0], (2 * r).square().mean())
    assert all(p.grad is None for p in m.parameters())  # estimation leaves no gradients behind


def test_penalty_rejects_a_fisher_of_another_model():
    m = Regressor()
    with pytest.raises(ConfigError, match="no parameter"):
        EWCPenalty(m, {"other.weight": torch.ones(3)}, {"other.weight": torch.ones(3)}, 1.0)


def _tiny_lm(tmp_path, run, *extra):
    text = "".join(chr(97 + (i * 7 + i // 13) % 26) for i in range(6000))
    (tmp_path / "a.txt").write_text(text)
    return load_config(None, [
        "model.name=r1_lm", "model.flavor=tiny", "data.name=text", f"data.path={tmp_path / 'a.txt'}",
        "data.block_size=32", "data.batch_size=8", "data.dedup=none", f"data.cache_dir={tmp_path / 'cache'}",
        "train.max_steps=4", "train.eval_every=4", "train.log_every=1", "run.threads=1", "train.amp='off'",
        f"run.dir={tmp_path / run}", *extra])


def test_ewc_through_the_trainer(tmp_path):
    fit(_tiny_lm(tmp_path, "s1", "train.ewc_samples=5"))
    fisher, theta = load_ewc(tmp_path / "s1")
    assert "tok_emb.weight" in fisher and "head.weight" not in fisher  # tied weights once
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    fit(_tiny_lm(tmp_path, "s2", f"train.init_from={tmp_path / 's1'}", f"train.ewc_from={tmp_path / 's1'}",
                 "train.ewc_lambda=100", "train.ewc_samples=5"))
    steps = [json.loads(line) for line in (tmp_path / "s2" / "history.jsonl").read_text().splitlines()]
    ewc = [r["train/ewc"] for r in steps if "train/ewc" in r]
    assert ewc[0] == 0.0 and ewc[-1] > 0.0  # zero at theta*, grows as training moves away
    fisher2, theta2 = load_ewc(tmp_path / "s2")  # online EWC: the saved Fisher accumulates
    assert (fisher2["tok_emb.weight"] >= fisher["tok_emb.weight"]).all()
    assert not torch.equal(theta2["tok_emb.weight"], theta["tok_emb.weight"])
