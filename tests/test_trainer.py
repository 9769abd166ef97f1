"""The one Trainer: accumulation, EMA, non-finite guard, checkpoints, AMP decision."""
from __future__ import annotations

import json

import pytest
import torch

from r1.config import load_config
from r1.errors import ConfigError, TrainingAborted
from r1.train import Trainer, fit
from r1.train.checkpoint import load_checkpoint
from r1.train.hardware import resolve_amp
from tests.conftest import ROOT, tiny_cls_overrides

DIGITS = ROOT / "configs/cls/digits.yaml"


def _mlp_cfg(run_dir, **extra):
    over = {"model.name": "mlp", "model.flavor": "tiny", "model.in_features": 3 * 16 * 16, "train.clip_grad": 0.0}
    over.update(extra)
    return load_config(DIGITS, tiny_cls_overrides(run_dir, **over))


def _grads_after_one_step(cfg) -> list[torch.Tensor]:
    t = Trainer(cfg)
    t.model.train()
    t.train_step(t._batches())
    return [p.grad.clone() for p in t.model.parameters()]


def test_four_micro_batches_of_8_equal_one_batch_of_32(tmp_path):
    whole = _grads_after_one_step(_mlp_cfg(tmp_path / "a", **{"train.accum_steps": 1}))
    accum = _grads_after_one_step(_mlp_cfg(tmp_path / "b", **{"train.accum_steps": 4}))
    for g1, g4 in zip(whole, accum):
        torch.testing.assert_close(g4, g1, atol=1e-5, rtol=0)


def test_ema_follows_decay_formula(tmp_path):
    cfg = _mlp_cfg(tmp_path / "ema", **{"train.ema": True, "train.ema_decay": 0.9})
    t = Trainer(cfg)
    batches = t._batches()
    t.train_step(batches)  # first update copies the weights
    before = [p.detach().clone() for p in t.ema.module.parameters()]
    t.train_step(batches)
    for e0, e1, p in zip(before, t.ema.module.parameters(), t.model.parameters()):
        torch.testing.assert_close(e1, 0.9 * e0 + 0.1 * p.detach(), atol=1e-6, rtol=0)
    assert t.eval_model() is t.ema.module


class _NaNAfter(torch.nn.Module):
    """Wraps a model and makes its loss NaN on selected optimizer steps."""

    def __init__(self, model, bad_steps):
        super().__init__()
        self.inner, self.bad_steps, self.calls = model, set(bad_steps), 0

    def forward(self, x, y=None):
        out = self.inner(x, y)
        if y is not None:
            self.calls += 1
            if self.calls in self.bad_steps:
                out = {k: v * float("nan") for k, v in out.items()}
        return out


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    t = Trainer(_mlp_cfg(tmp_path / "nan"), wrap_model=lambda m, d: _NaNAfter(m, {2, 4}))
    before = [p.detach().clone() for p in t.model.parameters()]
    batches = t._batches()
    assert t.train_step(batches) is not None
    mid = [p.detach().clone() for p in t.model.parameters()]
    assert t.train_step(batches) is None  # skipped: weights untouched
    assert all(torch.equal(a, b) for a, b in zip(mid, t.model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, mid))
    assert t.state["nonfinite_total"] == 1 and t.state["step"] == 1


def test_abort_after_n_nonfinite_in_a_row(tmp_path):
    cfg = _mlp_cfg(tmp_path / "abort", **{"train.max_nonfinite": 3})
    t = Trainer(cfg, wrap_model=lambda m, d: _NaNAfter(m, range(1, 100)))
    batches = t._batches()
    with pytest.raises(TrainingAborted, match="3 non-finite steps in a row"):
        for _ in range(5):
            t.train_step(batches)


def test_run_directory_contents(trained_digits):
    for name in ("config.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "model.safetensors", "model.json",
                 "metrics.json", "log.txt", "history.jsonl", "confusion_matrix.png"):
        assert (trained_digits / name).is_file(), name
    assert list((trained_digits / "events").iterdir())
    metrics = json.loads((trained_digits / "metrics.json").read_text())
    assert {"val/accuracy", "test/accuracy", "test/macro_f1", "train/steps"} <= set(metrics)
    assert metrics["train/steps"] == 6
    ckpt = load_checkpoint(trained_digits / "checkpoints/last.pt")  # weights_only=True
    assert {"model", "optimizer", "scheduler", "scaler", "ema", "rng", "trainer"} <= set(ckpt)
    log = (trained_digits / "log.txt").read_text()
    assert "step 2/6 | loss" in log and "grad_norm" in log and "samples/s" in log and "mem" in log
    assert "AMP off: this CPU has no native bf16" in log or "AMP off: fp32 on CPU by default" in log


def test_existing_run_is_not_overwritten(trained_digits):
    cfg = load_config(DIGITS, tiny_cls_overrides(trained_digits))
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        fit(cfg)


def test_amp_decision_on_cpu():
    assert resolve_amp("off", torch.device("cpu")) is None
    from r1.train.hardware import cpu_has_native_bf16
    assert resolve_amp("auto", torch.device("cpu")) is None  # fp32 unless bf16 is asked for
    assert resolve_amp("bf16", torch.device("cpu")) == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert resolve_amp("fp16", torch.device("cpu")) is None  # fp16 autocast is a CUDA feature


def test_gradient_checkpointing_gives_same_gradients(tmp_path):
    from r1.registry import build_model
    torch.manual_seed(0)
    model = build_model("r1_mobilenetv3", flavor="tiny", num_classes=10, dropout=0.0)
    x, y = torch.randn(4, 3, 32, 32, requires_grad=True), torch.tensor([0, 1, 2, 3])
    model(x, y)["ce"].backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x, y)["ce"].backward()
    for a, b in zip(ref, model.parameters()):
        torch.testing.assert_close(b.grad, a, atol=1e-5, rtol=1e-4)
