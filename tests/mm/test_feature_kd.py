"""TinyBERT-style feature distillation of R1-MM (distill.feature_weight, distill.layer_map): the loss,
its training, the layer map's checks, and the projection staying out of the student's artifacts."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

import r1
from r1.compress.distill import Distiller, uniform_layer_map
from r1.config import DistillConfig, load_config
from r1.errors import ConfigError
from r1.models.mm.family import question_image_batch
from r1.registry import build_model
from tests.conftest import ROOT

META = {"preprocess": {"size": [75, 75]}, "max_len": 8, "vocab_size": 50}
SMALL = {"dim": 32, "heads": 4, "text_layers": 1, "channels": [8, 12, 16, 24], "late_blocks": 1,
         "deform_layers": 0, "ffn": "dense"}


def _model(**fields):
    torch.manual_seed(0)
    return build_model("r1_mm", flavor="tiny", num_classes=5, vocab_size=50, max_len=8, **fields)


def _batch(n=4):
    x = question_image_batch(META, n, torch.Generator().manual_seed(1))
    x["mask"][1, 5:] = False  # a padded question: its padding is left out of every loss
    return x, {"answer": torch.arange(n) % 5}


def _distiller(student, teacher, **cfg):
    cfg = DistillConfig(teacher="x", **{"feature_weight": 1.0, **cfg})
    return Distiller(student, teacher, "mm", cfg, _batch()[0])


def test_feature_loss_is_zero_for_identical_teacher_and_student():
    teacher = _model()
    wrap = _distiller(copy.deepcopy(teacher), teacher).eval()  # eval: the same BN statistics and MoE routing
    out = wrap(*_batch())
    assert out["feature"].item() == pytest.approx(0.0, abs=1e-6) and out["kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert all(isinstance(p, torch.nn.Identity) for p in wrap.features.projections)  # same widths: no projection
    assert wrap.features.layer_map == [0, 1]


def test_feature_loss_decreases_when_trained_on_and_trains_the_projection():
    teacher = _model()
    wrap = _distiller(_model(cross_layers=1, **SMALL), teacher, alpha=0.0).train()
    assert wrap.features.layer_map == [1]  # uniform: the last student layer learns the last teacher layer
    proj = wrap.features.projections[0]
    assert isinstance(proj, torch.nn.Linear) and proj.weight.shape == (64, 32)
    before = proj.weight.detach().clone()
    opt = torch.optim.Adam([p for p in wrap.parameters() if p.requires_grad], lr=3e-3)
    x, y = _batch()
    losses = []
    for _ in range(25):
        loss = wrap(x, y)["feature"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert not torch.equal(before, proj.weight) and all(p.grad is None for p in teacher.parameters())


def test_uniform_layer_map():
    assert uniform_layer_map(2, 4) == [1, 3] and uniform_layer_map(1, 2) == [1] and uniform_layer_map(3, 3) == [0, 1, 2]


@pytest.mark.parametrize("layer_map, match", [
    ([2], r"^distill\.layer_map: 2 is not a teacher layer; allowed: teacher layers 0\.\.1$"),
    ([0, 1], r"^distill\.layer_map: \[0, 1\] has 2 entries, the student has 1 layers.*0\.\.1"),
])
def test_bad_layer_map_is_one_line_config_error(layer_map, match):
    with pytest.raises(ConfigError, match=match) as info:
        _distiller(_model(cross_layers=1, **SMALL), _model(), layer_map=layer_map)
    assert "\n" not in str(info.value)


def test_layer_map_config_checks():
    path = ROOT / "configs/mm/sortofclevr.yaml"
    with pytest.raises(ConfigError, match="distill.layer_map: .*feature_weight"):
        load_config(path, ["distill.layer_map=[1]"])
    with pytest.raises(ConfigError, match="distill.layer_map: .*negative"):
        load_config(path, ["distill.layer_map=[-1]", "distill.feature_weight=1"])
    assert load_config(path, ["distill.layer_map=[1, 1]", "distill.feature_weight=0.5"]).distill.layer_map == [1, 1]


def test_models_and_families_without_features_are_refused():
    torch.manual_seed(0)
    baseline = build_model("mm_cnn_mlp", flavor="tiny", num_classes=5, vocab_size=50, max_len=8)
    with pytest.raises(ConfigError, match="distill.feature_weight: model mm_cnn_mlp has no cross-modal layers"):
        _distiller(baseline, _model())
    mlp = build_model("mlp", flavor="tiny", num_classes=3, in_features=12)
    with pytest.raises(ConfigError, match="distill.feature_weight: family 'cls' gives no features"):
        Distiller(mlp, copy.deepcopy(mlp), "cls", DistillConfig(teacher="x", feature_weight=1.0), torch.randn(2, 12))


def test_cross_attention_weights_path_matches_fused_attention():
    from r1.models.mm.layers import CrossAttention

    torch.manual_seed(0)
    attn = CrossAttention(32, 4).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4:] = False
    fused = attn(x, ctx, mask)
    attn.keep_weights = True
    explicit = attn(x, ctx, mask)
    assert torch.allclose(fused, explicit, atol=1e-5)
    w = attn.last_weights
    assert w.shape == (2, 4, 5, 7) and torch.allclose(w.sum(-1), torch.ones(2, 4, 5))
    assert w[0, :, :, 4:].abs().max() == 0  # padded keys get no attention


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    from r1.train import fit

    run = tmp_path_factory.mktemp("mmkd") / "teacher"
    fit(load_config(ROOT / "configs/mm/sortofclevr.yaml", [f"run.dir={run}", *TINY]))
    return run


TINY = ["data.train_images=40", "data.val_images=8", "data.test_images=8", "data.batch_size=16",
        "train.max_steps=3", "train.eval_every=3", "train.log_every=1", "sched.warmup_steps=1"]


def test_distilled_student_artifacts_hold_no_projection(teacher_run, tmp_path):
    from r1.train import fit

    run = tmp_path / "student"
    student = [f"model.{k}={v}".replace("'", "") for k, v in {**SMALL, "cross_layers": 1}.items()]
    fit(load_config(ROOT / "configs/mm/sortofclevr.yaml", [
        f"run.dir={run}", *TINY, *student, f"distill.teacher={teacher_run}", "distill.feature_weight=1.0"]))
    log = (run / "log.txt").read_text()
    assert "feature" in log and "kd" in log
    saved = load_file(run / "model.safetensors")
    assert not any("projection" in k or k.startswith(("student.", "teacher.", "features.")) for k in saved)
    fresh = r1.load_model(run)
    assert set(saved) == set(fresh.state_dict()) and fresh.cfg.dim == 32
    assert r1.load(run).predict([{"image": torch.zeros(3, 75, 75).numpy().transpose(1, 2, 0).astype("uint8"),
                                  "text": "what is the shape of the red object?"}])[0]["answer"]


def test_wrap_checks_teacher_without_cross_layers(teacher_run, tmp_path):
    """An R1-MM student under a CNN+MLP teacher: the one-line error at wrap time, before any step."""
    from r1.train import fit

    base = tmp_path / "mlp"
    fit(load_config(ROOT / "configs/mm/sortofclevr.yaml", [f"run.dir={base}", *TINY, "model.name=mm_cnn_mlp"]))
    with pytest.raises(ConfigError, match="model mm_cnn_mlp has no cross-modal layers"):
        fit(load_config(ROOT / "configs/mm/sortofclevr.yaml", [
            f"run.dir={tmp_path / 's'}", *TINY, f"distill.teacher={base}", "distill.feature_weight=1.0"]))

