"""The width-switchable student: widths share weights, each width equals its materialized network."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from r1.config import load_config
from r1.models.cls.slimmable import materialize
from r1.registry import build_model
from tests.conftest import ROOT, tiny_cls_overrides


def _model():
    torch.manual_seed(0)
    model = build_model("r1_slim_mobilenetv3", flavor="tiny", num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5])
def test_each_width_equals_its_materialized_plain_network(width):
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    model.set_width(width)
    plain = materialize(model, width)
    assert type(plain).__name__ == "R1MobileNetV3"
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-4)
    full = sum(p.numel() for p in materialize(model, 1.0).parameters())
    if width < 1.0:
        assert sum(p.numel() for p in plain.parameters()) < full


def test_training_step_trains_every_width_and_distils_in_place():
    model = _model().train()
    losses = model(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "kd_w0.75", "kd_w0.5"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.switch.active == 1.0


def test_bad_width_settings_are_config_errors():
    from r1.errors import ConfigError
    with pytest.raises(ConfigError, match="active_width: 0.3 is not one of widths"):
        load_config(ROOT / "configs/cls/digits.yaml", ["model.name=r1_slim_mobilenetv3", "model.active_width=0.3"])
    with pytest.raises(ConfigError, match="widths: expected fractions in \\(0, 1\\] including 1.0"):
        load_config(ROOT / "configs/cls/digits.yaml", ["model.name=r1_slim_mobilenetv3", "model.widths=[0.5]"])


def test_trains_through_the_one_trainer(tmp_path):
    from r1.train import fit
    cfg = load_config(ROOT / "configs/cls/digits.yaml",
                      tiny_cls_overrides(tmp_path / "slim", **{"model.name": "r1_slim_mobilenetv3"}))
    metrics = fit(cfg)
    assert 0 <= metrics["test/accuracy"] <= 1
    assert "kd_w0.5" in (tmp_path / "slim" / "log.txt").read_text()
