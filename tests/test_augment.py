"""`data.augment` policies for classification (torchvision.transforms.v2): parsing, shapes/dtypes, CutMix /
MixUp soft targets through the loss, reproducibility from the per-sample seed."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from r1.config import load_config
from r1.data import build_data
from r1.errors import ConfigError
from r1.models.cls.config import AUGMENT_POLICIES, augment_names, parse_augment
from tests.conftest import ROOT, tiny_cls_overrides

DIGITS = ROOT / "configs/cls/digits.yaml"


def _digits(policy: str, img_size: int = 16):
    cfg = load_config(DIGITS, [f"data.augment={policy}", f"data.img_size={img_size}"])
    return build_data(cfg.data, 0)


def test_policy_strings_are_parsed_and_checked():
    assert parse_augment(True, "k") == "basic" and parse_augment(False, "k") == "none"
    assert parse_augment("mixup+Basic + rotation", "k") == "basic+rotation+mixup"  # table order, case-free
    assert augment_names("none") == [] and augment_names("basic+cutmix") == ["basic", "cutmix"]
    with pytest.raises(ConfigError, match="data.augment: unknown augmentation policy 'blur'; allowed: none, basic"):
        load_config(DIGITS, ["data.augment=basic+blur"])
    with pytest.raises(ConfigError, match="data.augment: 'none' cannot be combined"):
        load_config(DIGITS, ["data.augment=none+rotation"])
    with pytest.raises(ConfigError, match="data.augment: expected a policy name"):
        load_config(DIGITS, ["data.augment=3"])
    assert load_config(DIGITS, ["data.augment=false"]).data.augment == "none"  # the old boolean still works


@pytest.mark.parametrize("policy", [p for p in AUGMENT_POLICIES if p not in ("cutmix", "mixup")])
def test_each_per_image_policy_keeps_shape_dtype_and_eval_images(policy):
    plain, bundle = _digits("none"), _digits(policy)
    torch.manual_seed(0)
    x, y = bundle.train[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert y.dtype == torch.int64 and y.dim() == 0
    assert torch.equal(bundle.val[0][0], plain.val[0][0])  # evaluation never augments
    torch.manual_seed(0)
    assert torch.equal(bundle.train[3][0], x)  # a function of the seed


def test_randomised_policies_change_training_images():
    plain = _digits("none").train[5][0]
    for policy in ("basic", "rotation", "randaugment", "trivialaugment", "autoaugment", "colorjitter"):
        bundle = _digits(policy)
        changed = False
        for seed in range(8):
            torch.manual_seed(seed)
            changed |= not torch.equal(bundle.train[5][0], plain)
        assert changed, policy


@pytest.mark.parametrize("policy", ["cutmix", "mixup", "basic+cutmix+mixup"])
def test_pair_mixing_gives_soft_targets_that_train(policy):
    from r1.registry import build_model

    bundle = _digits(policy)
    torch.manual_seed(0)
    inputs, targets = bundle.collate([bundle.train[i] for i in range(8)])
    assert inputs.shape == (8, 3, 16, 16) and targets.shape == (8, 10) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(8)) and (targets >= 0).all()
    assert (targets.max(1).values < 1).any()  # some targets really are mixtures
    cfg = load_config(DIGITS, ["data.img_size=16"])
    cfg.model.num_classes = 10
    model = build_model(cfg.model)
    losses = model(inputs, targets)  # cross-entropy against probabilities
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert bundle.val[0][1].dim() == 0  # evaluation keeps integer labels
    assert torch.equal(bundle.train.labels, _digits("none").train.labels)  # the wrapped set's labels show through


def test_training_with_mixup_and_rotation_runs(tmp_path):
    from r1.train import fit

    run = tmp_path / "mix"
    metrics = fit(load_config(DIGITS, tiny_cls_overrides(run, **{"data.augment": "basic+rotation+mixup"})))
    assert 0.0 <= metrics["test/accuracy"] <= 1.0
    assert "augment: basic+rotation+mixup" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("policy", ["basic+equalize+grayscale", "randaugment+cutmix", "none"])
def test_imagefolder_policies(tmp_path, policy):
    root = tmp_path / "images"
    g = torch.Generator().manual_seed(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            pixels = torch.randint(0, 256, (20, 24, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    cfg = load_config(ROOT / "configs/cls/digits.yaml",
                      ["data.name=imagefolder", f"data.root={root}", "data.img_size=16", f"data.augment={policy}"])
    bundle = build_data(cfg.data, 0)
    torch.manual_seed(0)
    x, y = bundle.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert (y.shape == (2,) and y.dtype == torch.float32) if "cutmix" in policy else int(y) in (0, 1)
