"""`data.balance=sampler|loss` on a deliberately skewed ImageFolder: the imbalance ratio drops (logged
and in metrics.json), and the weighted draw resumes exactly."""
from __future__ import annotations

import json

import pytest
import torch

from r1.config import load_config
from r1.errors import ConfigError
from r1.train import fit
from r1.train.sampler import ResumableSampler
from tests.conftest import ROOT, tiny_cls_overrides
from tests.data.conftest import write_imagefolder


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    root = tmp_path_factory.mktemp("skewed")
    write_imagefolder(root, {"train": {"many": 48, "few": 6}, "val": {"many": 4, "few": 4}})
    return root


def _fit(skewed, tmp_path, balance: str, augment: str = "basic") -> dict:
    run = tmp_path / balance
    cfg = load_config(ROOT / "configs/cls/digits.yaml", tiny_cls_overrides(
        run, **{"data.name": "imagefolder", "data.root": skewed, "data.img_size": 16, "data.batch_size": 16,
                "data.balance": balance, "data.augment": augment, "train.max_steps": 3, "train.eval_every": 3}))
    fit(cfg)
    return json.loads((run / "metrics.json").read_text())


def test_sampler_balances_the_draw(skewed, tmp_path):
    m = _fit(skewed, tmp_path, "sampler")
    assert m["data/balance_ratio_before"] == 8.0
    assert m["data/balance_ratio_after"] < 2.0  # 54 draws at 1:1 odds
    assert "data.balance=sampler: class imbalance 8.00:1 before" in (tmp_path / "sampler" / "log.txt").read_text()


def test_loss_weights_classes(skewed, tmp_path):
    m = _fit(skewed, tmp_path, "loss")
    assert m["data/balance_ratio_before"] == 8.0 and m["data/balance_ratio_after"] == 1.0


@pytest.mark.parametrize("balance", ["sampler", "loss"])
def test_balance_with_mixed_pairs(skewed, tmp_path, balance):
    """CutMix wraps the training set: its labels are read through the wrapper."""
    m = _fit(skewed, tmp_path, balance, augment="basic+cutmix")
    assert m["data/balance_ratio_before"] == 8.0 and m["data/balance_ratio_after"] < 2.0


def test_none_changes_nothing(skewed, tmp_path):
    assert "data/balance_ratio_before" not in _fit(skewed, tmp_path, "none")


def test_weighted_draw_resumes_exactly():
    weights = torch.tensor([1.0] * 40 + [8.0] * 5)
    full = ResumableSampler(45, seed=3)
    full.weights = weights
    full.set_epoch(2)
    order = list(full)
    resumed = ResumableSampler(45, seed=3)
    resumed.weights = weights
    resumed.set_epoch(2, start=17)
    assert list(resumed) == order[17:]
    assert len({seed for _, seed in order}) == len(order)  # repeated items get fresh augmentation seeds
    few = sum(idx >= 40 for idx, _ in order)
    assert 12 < few < 33  # the 5 heavy items carry half the mass


def test_unknown_balance_is_a_config_error():
    with pytest.raises(ConfigError, match="data.balance.*allowed.*none.*sampler.*loss"):
        load_config(ROOT / "configs/cls/digits.yaml", ["data.balance=oversample"])


class _Stop(Exception):
    pass


def test_balanced_run_resumes_exactly(skewed, tmp_path):
    """Interrupted after a mid-epoch checkpoint and resumed, the weights equal an uninterrupted run's."""
    from safetensors.torch import load_file

    from r1.train.callbacks import Callback

    class StopAt(Callback):
        def on_step_end(self, trainer, step, out):
            if trainer.state["step"] == 5:
                raise _Stop

    def cfg(run):
        return load_config(ROOT / "configs/cls/digits.yaml", tiny_cls_overrides(
            run, **{"data.name": "imagefolder", "data.root": skewed, "data.img_size": 16, "data.batch_size": 8,
                    "data.balance": "sampler", "train.max_steps": 9, "train.eval_every": 9, "train.ckpt_every": 4}))
    fit(cfg(tmp_path / "ref"))
    with pytest.raises(_Stop):
        fit(cfg(tmp_path / "cut"), callbacks=[StopAt()])
    fit(cfg(tmp_path / "cut"), resume=True)
    a, b = load_file(str(tmp_path / "ref/model.safetensors")), load_file(str(tmp_path / "cut/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
