"""Trainer callbacks: the config picks the built-in ones, callers add theirs, hooks run in order;
BatchNorm statistics of short runs; model/data family check; DDP device placement."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn

from r1.config import load_config
from r1.train import Trainer
from r1.train.bn_stats import ShortRunBatchNorm, recompute_bn_stats
from r1.train.callbacks import (
    Callback,
    Distillation,
    ElasticWeightConsolidation,
    ExitCalibration,
    ProgressiveUnfreezing,
    QuantizationAware,
    config_callbacks,
)
from r1.train.evaluation import before_eval
from tests.conftest import ROOT, tiny_cls_overrides

DIGITS = ROOT / "configs/cls/digits.yaml"
MLP = {"model.name": "mlp", "model.flavor": "tiny", "model.in_features": 3 * 16 * 16}


def _kinds(cfg) -> list[type]:
    return [type(cb) for cb in config_callbacks(cfg)]


def test_config_activates_the_built_in_callbacks_in_order(tmp_path):
    plain = load_config(DIGITS, tiny_cls_overrides(tmp_path))
    assert _kinds(plain) == [ShortRunBatchNorm]  # always built; acts only on short BatchNorm runs
    full = load_config(DIGITS, tiny_cls_overrides(tmp_path, **{
        "qat.enabled": True, "distill.teacher": str(tmp_path), "train.ewc_samples": 3}))
    assert _kinds(full) == [QuantizationAware, Distillation, ElasticWeightConsolidation, ShortRunBatchNorm]
    lm = load_config(ROOT / "configs/lm/shakespeare-char.yaml", ["model.freeze_layers=2"])
    kinds = _kinds(lm)
    assert ProgressiveUnfreezing in kinds and ExitCalibration in kinds


class _Recorder(Callback):
    """Records hook calls, adds a loss, asks to stop after the first validation."""

    def __init__(self):
        self.calls: list[str] = []

    def on_build_model(self, trainer, model):
        self.calls.append("build")
        return model

    def on_setup(self, trainer):
        self.calls.append("setup")

    def on_step_start(self, trainer, step):
        self.calls.append(f"start{step}")

    def extra_losses(self, trainer, inputs, targets):
        return {"extra": torch.tensor(0.25, device=trainer.device)}

    def on_step_end(self, trainer, step, out):
        self.calls.append(f"end{step}")
        assert out["extra"] == pytest.approx(0.25)

    def before_eval(self, trainer, model, final):
        assert model is trainer.eval_model()
        self.calls.append("final_eval" if final else "eval")

    def on_eval_end(self, trainer, metrics):
        self.calls.append("eval_end")
        return "val/accuracy" in metrics  # stop

    def on_finish(self, trainer, model):
        self.calls.append("finish")
        return model


def test_caller_callbacks_get_every_hook_and_can_stop_the_run(tmp_path):
    rec = _Recorder()
    cfg = load_config(DIGITS, tiny_cls_overrides(tmp_path / "run", **MLP, **{"train.eval_every": 2}))
    metrics = Trainer(cfg, callbacks=[rec]).fit()
    assert rec.calls == ["build", "setup", "start0", "end1", "start1", "end2", "eval", "eval_end",
                         "final_eval", "finish"]
    assert metrics["train/steps"] == 2  # stopped at the first evaluation, not at 6 steps
    assert "extra" in (tmp_path / "run" / "log.txt").read_text()


def test_on_step_and_wrap_model_shorthands_still_work(tmp_path):
    seen, wrapped = [], []

    def wrap(model, data):
        wrapped.append(data.family)
        return model

    cfg = load_config(DIGITS, tiny_cls_overrides(tmp_path, **MLP, **{"train.max_steps": 2}))
    t = Trainer(cfg, on_step=lambda step, total, out: seen.append((step, total)), wrap_model=wrap)
    t.fit()
    assert wrapped == ["cls"] and seen == [(1, 2), (2, 2)]


# ----------------------------------------------------------------------------- BatchNorm statistics
class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.other = nn.BatchNorm1d(3)  # never reached by the forward: keeps its statistics
        self.register_buffer("counter", torch.zeros(()))

    def forward(self, x, y=None):
        self.counter += 1  # a non-BatchNorm buffer: must come back unchanged
        return {"loss": self.bn(x).sum()}


def test_recompute_bn_stats_is_the_plain_average_over_the_batches():
    torch.manual_seed(0)
    net = _BNNet().eval()
    net.other.running_mean.fill_(5.0)
    batches = [(torch.randn(8, 3) * 2 + 1, None) for _ in range(4)]
    rng = torch.get_rng_state()
    assert recompute_bn_stats(net, batches, lambda b: b) == 4
    means = torch.stack([x.mean(0) for x, _ in batches])
    variances = torch.stack([x.var(0) for x, _ in batches])  # unbiased, as BatchNorm keeps it
    torch.testing.assert_close(net.bn.running_mean, means.mean(0))
    torch.testing.assert_close(net.bn.running_var, variances.mean(0))
    assert net.bn.momentum == 0.1 and not net.training
    assert float(net.other.running_mean[0]) == 5.0 and float(net.counter) == 0.0
    assert torch.equal(torch.get_rng_state(), rng)


def _bn_cfg(tmp_path, steps):
    return load_config(DIGITS, tiny_cls_overrides(tmp_path / f"s{steps}", **{"train.max_steps": steps}))


@pytest.mark.parametrize("steps, active", [(6, False), (10, True), (99, True), (100, False)])
def test_short_run_batchnorm_acts_between_one_and_ten_momentum_windows(tmp_path, steps, active):
    t = Trainer(_bn_cfg(tmp_path, steps))
    cb = next(c for c in t.callbacks if isinstance(c, ShortRunBatchNorm))
    assert cb.active is active


def test_short_run_batchnorm_replaces_the_lagging_statistics(tmp_path):
    t = Trainer(_bn_cfg(tmp_path, 12))
    batches = t._batches()
    t.model.train()
    for _ in range(12):
        t.train_step(batches)
    bn = next(m for m in t.model.modules() if isinstance(m, nn.BatchNorm2d))
    stale = bn.running_var.clone()
    before_eval(t, final=True)
    assert not torch.allclose(bn.running_var, stale)
    assert int(bn.num_batches_tracked) == min(32, len(t.loader(t.data.train, train=True)))


def test_ema_weights_get_their_own_batchnorm_statistics_at_any_length(tmp_path):
    """An average of weights has no running statistics of its own: before each evaluation they are
    recomputed for the averaged model (the one evaluated and saved), however long the run."""
    cfg = load_config(DIGITS, tiny_cls_overrides(tmp_path / "ema", **{"train.max_steps": 150, "train.ema": True,
                                                                      "train.ema_decay": 0.9}))
    t = Trainer(cfg)
    assert next(c for c in t.callbacks if isinstance(c, ShortRunBatchNorm)).active  # 150 steps: not a short run
    batches = t._batches()
    t.model.train()
    for _ in range(3):
        t.train_step(batches)
    averaged = next(m for m in t.eval_model().modules() if isinstance(m, nn.BatchNorm2d))
    student = next(m for m in t.student.modules() if isinstance(m, nn.BatchNorm2d))
    before = student.running_var.clone()
    before_eval(t, final=True)
    assert t.eval_model() is t.ema.module
    assert int(averaged.num_batches_tracked) == min(32, len(t.loader(t.data.train, train=True)))
    assert torch.equal(student.running_var, before)  # the student's own statistics are left alone


# ----------------------------------------------------------------------------- configuration errors
def test_model_data_family_mismatch_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from r1 import cli
    monkeypatch.setattr(sys, "argv", ["r1", "train", str(DIGITS), "model.name=r1_lm", f"run.dir={tmp_path}",
                                      "run.threads=1", "--no-progress"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: model.name: r1_lm is a lm-family model but data.name digits is cls-family data")
    assert "allowed models for cls data:" in err and "r1_mobilenetv3" in err and "Traceback" not in err


def test_progressive_unfreezing_needs_a_model_that_supports_it(tmp_path):
    from r1.errors import ConfigError

    t = Trainer(load_config(DIGITS, tiny_cls_overrides(tmp_path, **MLP)))
    with pytest.raises(ConfigError, match="model.freeze_layers: model mlp does not support progressive unfreezing"):
        ProgressiveUnfreezing().on_setup(t)


# ----------------------------------------------------------------------------- DDP placement
def test_each_torchrun_rank_takes_its_own_gpu(monkeypatch):
    from r1.train import distributed as D
    from r1.train.hardware import pick_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device = pick_device("auto", D.env_local_rank())
    assert device == torch.device("cuda", 1)
    assert D.ddp_kwargs(device) == {"device_ids": [1], "output_device": 1}
    assert pick_device("cpu", D.env_local_rank()) == torch.device("cpu")
    assert D.ddp_kwargs(torch.device("cpu")) == {}
    monkeypatch.setenv("WORLD_SIZE", "1")  # a single process ignores a stray LOCAL_RANK
    assert pick_device("cuda", D.env_local_rank()) == torch.device("cuda", 0)


def test_a_cuda_device_takes_cudnn_attention_out(monkeypatch):
    """cuDNN's SDPA backend gave wrong masked bf16 gradients on an H200 (hardware.avoid_cudnn_attention)."""
    from r1.train.hardware import pick_device

    calls = []
    monkeypatch.setattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: True)
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp", calls.append)
    pick_device("cpu")
    assert calls == []
    pick_device("cuda")
    assert calls == [False]


def test_nccl_group_starts_on_this_ranks_gpu(monkeypatch):
    """init_distributed makes cuda:LOCAL_RANK current before NCCL starts (collectives on own GPU)."""
    from r1.train import distributed as D

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(D.dist, "get_rank", lambda: 1)
    info = D.init_distributed(torch.device("cuda", 1))
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]
    assert (info.rank, info.local_rank, info.device) == (1, 1, torch.device("cuda", 1))
