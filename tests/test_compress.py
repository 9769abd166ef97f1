"""Distillation loss, structured pruning, int8 quantization."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from r1.compress.distill import kd_loss
from r1.compress.prune import apply_plan, count_macs, count_params, group_sizes, l1_plan
from r1.registry import build_model


def test_kd_loss_matches_hand_computation_with_t_squared():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.2, 3.0, -1.0]])
    T = 2.0
    ps = [math.exp(v / T) for v in s[0].tolist()]
    pt = [math.exp(v / T) for v in t[0].tolist()]
    ps = [v / sum(ps) for v in ps]
    pt = [v / sum(pt) for v in pt]
    kl = sum(q * math.log(q / p) for q, p in zip(pt, ps))
    assert kd_loss(s, t, T).item() == pytest.approx(T * T * kl, rel=1e-5)
    assert kd_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-7)
    mask = torch.tensor([[True, False]])  # rows of a (1, 2, C) tensor; only the first is kept
    both = torch.stack([s, t], 1)
    assert kd_loss(both, torch.stack([t, t], 1), T, mask).item() == pytest.approx(T * T * kl, rel=1e-5)


def test_distiller_adds_weighted_kd_and_keeps_teacher_frozen():
    from r1.compress.distill import Distiller
    from r1.config import DistillConfig

    torch.manual_seed(0)
    student = build_model("mlp", flavor="tiny", num_classes=3, in_features=12)
    teacher = build_model("mlp", flavor="tiny", num_classes=3, in_features=12)
    wrap = Distiller(student, teacher, "cls", DistillConfig(teacher="x", temperature=3.0, alpha=0.25)).train()
    x, y = torch.randn(5, 12), torch.tensor([0, 1, 2, 0, 1])
    out = wrap(x, y)
    ce = nn.functional.cross_entropy(student(x), y)
    assert out["ce"].item() == pytest.approx(0.75 * ce.item(), rel=1e-5)
    assert out["kd"].item() == pytest.approx(0.25 * kd_loss(student(x), teacher(x), 3.0).item(), rel=1e-5)
    sum(out.values()).backward()
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert torch.equal(wrap(x), student(x))


def _randomized_model():
    torch.manual_seed(0)
    model = build_model("r1_mobilenetv3", flavor="tiny", num_classes=10).eval()
    for m in model.modules():  # non-trivial BN so pruning bugs cannot hide behind identity stats
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.normal_(1, 0.2)
            m.bias.data.normal_(0, 0.1)
    return model


def _masked_reference(model, plan):
    """The unpruned model with the dropped channels zeroed where they are produced."""
    hooks = []

    def mask_hook(idx, size):
        keep = torch.zeros(size)
        keep[idx] = 1.0
        return lambda m, inp, out: out * keep.view(1, -1, *([1] * (out.dim() - 2)))

    for group, idx in plan.items():
        if group == "head":
            hooks.append(model.head[1].register_forward_hook(mask_hook(idx, model.head[0].out_features)))
        elif group == "last":
            last = model.backbone.blocks[-1]
            hooks.append(last.register_forward_hook(mask_hook(idx, last[0].out_channels)))
        else:
            block = model.backbone.blocks[int(group[5:])].block
            for sub in (block[0], block[1]):  # after expand and after depthwise (BN bias would leak)
                hooks.append(sub.register_forward_hook(mask_hook(idx, sub[0].out_channels)))
    return hooks


def test_pruned_forward_equals_masked_reference():
    model = _randomized_model()
    plan = l1_plan(model, 0.3)
    pruned = apply_plan(model, plan).eval()
    x = torch.randn(3, 3, 32, 32)
    hooks = _masked_reference(model, plan)
    with torch.no_grad():
        ref = model(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), ref, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(model(x), ref, atol=1e-3)  # the mask really changed something
    assert count_params(pruned) < 0.75 * count_params(model)
    assert count_macs(pruned, (1, 3, 32, 32)) < count_macs(model, (1, 3, 32, 32))


def test_progressive_steps_follow_the_reference_sizes_and_rebuild_from_config():
    model = _randomized_model()
    ref = group_sizes(model)
    pruned = model
    for _ in range(3):
        pruned = apply_plan(pruned, l1_plan(pruned, 0.05, ref))
    sizes = group_sizes(pruned)
    for g, n in ref.items():
        assert sizes[g] == max(min(8, n), n - 3 * math.floor(0.05 * n + 1e-9)), g
    rebuilt = build_model(pruned.r1_config)  # the config alone describes the pruned architecture
    rebuilt.load_state_dict(pruned.state_dict())


def test_static_int8_stays_close_to_float_on_calibration_data(trained_digits, tmp_path):
    from r1.artifacts import load_model
    from r1.compress.quantize import _Calibration, quantize_artifact
    from r1.inference.predictor import load_any

    out = quantize_artifact(trained_digits, tmp_path / "q", method="static", calib_batches=4)
    fp32, int8 = load_model(trained_digits), load_any(out)
    calib = _Calibration("images", fp32.r1_data, batches=4)
    agree, diffs = [], []
    with torch.no_grad():
        for batch in calib.batches:
            x = torch.from_numpy(batch["images"])
            a, b = fp32(x), int8(x)
            agree.append((a.argmax(1) == b.argmax(1)).float().mean().item())
            diffs.append(((a - b).abs().max() / a.abs().max()).item())
    assert np.mean(agree) >= 0.9 and max(diffs) < 0.25
    assert out.stat().st_size < (tmp_path / "q/fp32.onnx").stat().st_size / 2.5


def test_qat_fake_quant_is_close_and_strips_back_to_plain(tmp_path):
    from r1.compress.qat import FakeQuant, prepare_qat, strip_qat

    model = _randomized_model()
    keys = set(model.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        prepare_qat(model, ["first", "last"])
        model.train()
        model(x)  # observe activation ranges
        model.eval()
        fq = model(x)
    wrapped = [m for m in model.modules() if isinstance(m, FakeQuant)]
    assert wrapped and not isinstance(model.backbone.stem[0], FakeQuant) and not isinstance(model.head[3], FakeQuant)
    assert not torch.equal(fq, ref) and (fq - ref).abs().max() < 0.25 * ref.abs().max()
    strip_qat(model)
    assert set(model.state_dict()) == keys


def test_qat_trains_under_bf16_autocast():
    """Under bf16 autocast (train.amp=bf16 on a CPU with native bf16, or CUDA) QAT still simulates int8 in float32."""
    from r1.compress.qat import FakeQuant, prepare_qat

    model = prepare_qat(_randomized_model()).train()
    x = torch.randn(4, 3, 32, 32)
    for _ in range(2):  # the second step updates the tracked ranges (the lerp that failed with bf16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().sum().backward()
    fq = [m for m in model.modules() if isinstance(m, FakeQuant)]
    assert all(m.lo.dtype == m.hi.dtype == torch.float32 and m.hi > m.lo for m in fq)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_qat_run_saves_a_plain_loadable_model(tmp_path):
    import r1
    from r1.config import load_config
    from r1.train import fit
    from tests.conftest import ROOT, tiny_cls_overrides

    cfg = load_config(ROOT / "configs/cls/digits.yaml", tiny_cls_overrides(tmp_path / "qat", **{"qat.enabled": True}))
    fit(cfg)
    model = r1.load_model(tmp_path / "qat")
    assert type(model).__name__ == "R1MobileNetV3"


def test_lm_distillation_masks_ignored_positions():
    from r1.compress.distill import Distiller
    from r1.config import DistillConfig

    torch.manual_seed(0)
    student = build_model("gpt", flavor="tiny", num_classes=11, block_size=8)
    teacher = build_model("gpt", flavor="tiny", num_classes=11, block_size=8)
    wrap = Distiller(student, teacher, "lm", DistillConfig(teacher="x", temperature=2.0, alpha=0.5)).train()
    x = torch.randint(0, 11, (2, 8))
    y = torch.roll(x, -1, 1)
    y[:, :4] = -100  # e.g. prompt tokens
    out = wrap(x, y)
    keep = y != -100
    expected = 0.5 * kd_loss(student(x)[keep], teacher(x)[keep], 2.0)
    assert set(out) == {"lm", "kd"} and out["kd"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_int8_ops_auto_times_each_candidate_and_keeps_the_fastest_within_tolerance(trained_digits, tmp_path):
    import json

    from r1.compress.int8_choice import CANDIDATES
    from r1.compress.quantize import quantize_artifact
    from r1.errors import ConfigError
    from r1.onnx.graph import read_onnx_meta

    out = quantize_artifact(trained_digits, tmp_path / "q", calib_batches=2, keep_float=[], ops="auto",
                            tolerance=1.0)
    record = json.loads((tmp_path / "q/int8_choice.json").read_text())
    names = [r["candidate"] for r in record["rows"]]
    assert names == ["float"] + [c[0] for c in CANDIDATES]
    for r in record["rows"]:
        assert r["ms_bs1"] > 0 and r["ms_bs8"] > 0 and 0 <= r["metric"] <= 1
    best = max(record["rows"][1:], key=lambda r: r["speed_geomean"])  # tolerance 1.0: every candidate qualifies
    assert record["chosen"] == best["candidate"] and record["within_tolerance"]
    assert out.read_bytes() == (tmp_path / "q/int8_candidates" / f"{best['candidate']}.onnx").read_bytes()
    assert json.loads(read_onnx_meta(out)["r1.quantized"])["ops"] in ("weights", "all")
    assert "Chosen: **" in (tmp_path / "q/int8_choice.md").read_text()
    with pytest.raises(ConfigError, match="quantize.ops: 'some' is not allowed; allowed: weights, all, auto"):
        quantize_artifact(trained_digits, tmp_path / "bad", ops="some")
