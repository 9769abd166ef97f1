"""r1.robust: FGSM / PGD in pixel units, `r1 eval --attack`, the `adversarial` section and its callback."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from r1.config import load_config
from r1.errors import ConfigError
from r1.robust.attacks import PixelModel, attack, fgsm, pgd
from tests.conftest import ROOT, run_cli, tiny_cls_overrides

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _classifier(seed: int = 0) -> PixelModel:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(32, 5))
    return PixelModel(net, MEAN, STD).eval()


def _batch(n: int = 16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 12, 12, generator=g), torch.randint(5, (n,), generator=g)


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [0.03, 0.1, 0.3])
def test_attack_raises_loss_within_eps_and_pixel_range(method, eps):
    net, (x, y) = _classifier(), _batch()
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # pixels at the range ends stay in [0, 1]
    x_adv = attack(method, net, x, y, eps, steps=5)
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    with torch.no_grad():
        assert F.cross_entropy(net(x_adv), y) > F.cross_entropy(net(x), y)


def test_pgd_is_at_least_as_strong_as_fgsm_and_leaves_parameter_gradients_alone():
    net, (x, y) = _classifier(), _batch(64)
    with torch.no_grad():
        loss = {m: float(F.cross_entropy(net(attack(m, net, x, y, 0.1, steps=10)), y)) for m in ("fgsm", "pgd")}
    assert loss["pgd"] >= loss["fgsm"] - 1e-4
    assert all(p.grad is None for p in net.parameters())


def test_eps_zero_is_the_identity_and_bad_eps_is_refused():
    net, (x, y) = _classifier(), _batch()
    assert torch.equal(fgsm(net, x, y, 0.0), x) and torch.equal(pgd(net, x, y, 0.0), x)
    with pytest.raises(ValueError, match="eps must be in"):
        fgsm(net, x, y, 1.5)
    with pytest.raises(ValueError, match="unknown attack"):
        attack("cw", net, x, y, 0.1)


def test_soft_targets_are_attacked_too():
    net, (x, y) = _classifier(), _batch()
    soft = F.one_hot(y, 5).float() * 0.7 + 0.06
    assert (fgsm(net, x, soft, 0.05) - x).abs().max() <= 0.05 + 1e-6


def test_pixel_model_normalises_inside():
    net = _classifier()
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(net.to_pixels(net.normalize(x)), x, atol=1e-6)
    assert torch.allclose(net(x), net.model(net.normalize(x)))


# ----------------------------------------------------------------------------- r1 eval --attack
def test_eval_attack_reports_clean_and_attacked_accuracy(trained_digits, tmp_path):
    clean = run_cli("eval", str(trained_digits))
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "attack.json"
    res = run_cli("eval", str(trained_digits), "--attack", "fgsm", "--eps", "0.1", "--json", str(out))
    assert res.returncode == 0, res.stderr
    m = json.loads(out.read_text())
    assert m["test/accuracy"] == json.loads(clean.stdout)["test/accuracy"]  # same split, same weights
    assert 0.0 <= m["test/attack_accuracy"] <= m["test/accuracy"] + 1e-9
    assert m["attack/method"] == "fgsm" and m["attack/eps"] == 0.1
    assert m["test/mean_linf"] <= 0.1 + 1e-6
    pgd_run = run_cli("eval", str(trained_digits), "--attack", "pgd", "--eps", "0.1", "--steps", "3", "--split", "val")
    assert pgd_run.returncode == 0, pgd_run.stderr
    assert json.loads(pgd_run.stdout)["attack/steps"] == 3


@pytest.mark.parametrize("args, message", [
    (["--attack", "fgsm", "--eps", "1.5"], "--eps: 1.5 is outside [0, 1]"),
    (["--attack", "fgsm", "--eps", "-0.1"], "--eps: -0.1 is outside [0, 1]"),
    (["--attack", "cw"], "--attack: 'cw' is not allowed; allowed: fgsm, pgd"),
    (["--attack", "pgd", "--steps", "0"], "--steps: 0 must be >= 1"),
])
def test_eval_attack_bad_options_are_one_line_config_errors(trained_digits, args, message):
    res = run_cli("eval", str(trained_digits), *args)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_eval_attack_needs_the_torch_runtime(trained_digits, tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not used")
    res = run_cli("eval", str(fake), "--attack", "fgsm")
    assert res.returncode == 2 and "needs the torch runtime" in res.stderr


# ----------------------------------------------------------------------------- adversarial section
@pytest.mark.parametrize("override, message", [
    ("adversarial.eps=1.5", "adversarial.eps: 1.5 is above the maximum 1.0"),
    ("adversarial.method=cw", "adversarial.method: 'cw' is not allowed"),
    ("adversarial.ratio=-0.5", "adversarial.ratio: -0.5 is below the minimum 0.0"),
    ("adversarial.steps=0", "adversarial.steps: 0 is below the minimum 1"),
])
def test_adversarial_section_is_validated(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(ROOT / "configs/cls/digits.yaml", [override])


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_adversarial_training_callback_attacks_a_share_of_each_batch(tmp_path, monkeypatch, method):
    import r1.robust.callback as cb
    from r1.artifacts import load_model
    from r1.train import fit

    seen = []
    real = cb.attack

    def spy(name, net, pixels, targets, eps, *args, **kw):
        seen.append((name, len(pixels), eps, net.model.training))
        out = real(name, net, pixels, targets, eps, *args, **kw)
        assert (out - pixels).abs().max() <= eps + 1e-6
        return out

    monkeypatch.setattr(cb, "attack", spy)
    run = tmp_path / "adv"
    cfg = load_config(ROOT / "configs/cls/digits.yaml",
                      tiny_cls_overrides(run, **{"adversarial.method": method, "adversarial.eps": 0.05,
                                                 "adversarial.ratio": 0.25, "adversarial.steps": 2}))
    metrics = fit(cfg)
    assert len(seen) == 6  # one attack per training step, none at evaluation
    assert all(s == (method, 8, 0.05, False) for s in seen)  # 25% of 32, attacked in eval mode
    assert 0.0 <= metrics["test/accuracy"] <= 1.0
    model = load_model(run)  # saved weights are the plain model's (no wrapper prefix)
    assert type(model).__name__ != "AdversarialBatches"


def test_adversarial_training_refuses_data_without_pixel_normalisation():
    from types import SimpleNamespace

    from r1.robust.callback import AdversarialTraining

    cfg = load_config(ROOT / "configs/cls/digits.yaml", ["adversarial.method=fgsm"])
    callback = AdversarialTraining.from_config(cfg)
    trainer = SimpleNamespace(data=SimpleNamespace(meta={"vocab_size": 256}), cfg=SimpleNamespace(
        data=SimpleNamespace(name="text")))
    with pytest.raises(ConfigError, match="adversarial.method: fgsm needs an image classifier"):
        callback.on_build_model(trainer, nn.Linear(2, 2))
    assert AdversarialTraining.from_config(load_config(ROOT / "configs/cls/digits.yaml")) is None
