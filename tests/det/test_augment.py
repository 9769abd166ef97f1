"""Detection augmentation: `data.augment` policies, mosaic and mixup keep boxes on the objects;
`data.close_mosaic` switches them off for the last epochs and a resumed run stays exact."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import load_file

from r1.config import load_config, to_dict
from r1.errors import ConfigError
from r1.models.det.config import DET_AUGMENT_POLICIES, VOCConfig, parse_det_augment
from r1.models.det.data import DetDataset, Record
from r1.models.det.mix import CloseMosaic, MosaicMixup, close_epoch, paste, with_mosaic
from r1.models.det.transforms import build_transforms
from r1.train import fit
from r1.train.callbacks import Callback
from r1.train.sampler import ResumableSampler, SeededItems
from r1.train.trainer import Trainer
from tests.conftest import ROOT

SIZE = 96


class Rectangles(DetDataset):
    """Synthetic photos: black canvases of varied shapes with 2-4 white rectangles, exact boxes."""

    def __init__(self, n: int, transform):
        g = torch.Generator().manual_seed(0)
        self.images, records = [], []
        for i in range(n):
            h, w = int(torch.randint(60, 140, (), generator=g)), int(torch.randint(60, 140, (), generator=g))
            img, boxes = torch.zeros(3, h, w, dtype=torch.uint8), []
            for _ in range(int(torch.randint(2, 5, (), generator=g))):
                bw, bh = (int(torch.randint(10, 30, (), generator=g)) for _ in range(2))
                x, y = int(torch.randint(0, w - bw, (), generator=g)), int(torch.randint(0, h - bh, (), generator=g))
                img[:, y:y + bh, x:x + bw] = 255
                boxes.append([x, y, x + bw, y + bh])
            self.images.append(img)
            records.append(Record(None, torch.tensor(boxes, dtype=torch.float32).numpy(),
                                  torch.arange(len(boxes)).numpy(), i + 1, (h, w)))
        super().__init__(records, transform, keep_gt=False)

    def load(self, i):
        return self.images[i]


def _train_set(augment: str, **extra) -> torch.utils.data.Dataset:
    # mean 0 / std 1: the normalised image is the 0-1 image and every fill (padding, mosaic canvas) is black
    cfg = VOCConfig(size=SIZE, mean=[0.0] * 3, std=[1.0] * 3, augment=augment, **extra)
    cfg.validate("data")
    return with_mosaic(Rectangles(6, build_transforms(cfg, train=True)), cfg)


def _check_boxes_on_objects(img: torch.Tensor, boxes: torch.Tensor, level: float, uncovered: float = 0.1,
                            fill: float = 0.5) -> None:
    """Every box is mostly object pixels, and (nearly) every object pixel lies in a box. Object pixels:
    brighter than `level` of the way from the darkest to the brightest (colour policies move both)."""
    gray = img.mean(0)
    obj = gray > gray.min() + level * (gray.max() - gray.min())
    covered = torch.zeros_like(obj)
    assert len(boxes), "every synthetic image keeps some objects"
    for x1, y1, x2, y2 in boxes.round().long().tolist():
        inside = obj[y1:y2, x1:x2]
        assert inside.any(), f"box {[x1, y1, x2, y2]} is not on an object"
        if min(x2 - x1, y2 - y1) >= 6:  # a few-pixel box (an object cut by the border) is all edge
            assert inside.float().mean() > fill, f"box {[x1, y1, x2, y2]} is mostly off its object"
        covered[y1:y2, x1:x2] = True
    assert (obj & ~covered).sum() <= uncovered * obj.sum(), "object pixels outside every box"


POLICIES = ["none", "basic", "rotation", "vflip", "grayscale", "equalize", "colorjitter", "mosaic",
            "basic+mosaic", "mixup", "basic+rotation+vflip+mosaic+mixup"]


@pytest.mark.parametrize("augment", POLICIES)
def test_boxes_land_on_the_drawn_objects(augment):
    ds = _train_set(augment, mosaic_prob=1.0, mixup_prob=1.0)
    for seed in range(4):
        for i in range(len(ds)):
            torch.manual_seed(seed * 100 + i)
            img, target = ds[i]
            assert img.shape == (3, SIZE, SIZE) and target["boxes"].shape[1] == 4
            assert len(target["boxes"]) == len(target["labels"])
            # mixup blends ~50/50: a lone object is at ~0.5 brightness, background 0
            # a mosaic drops the boxes of objects mostly cut off by its seams (< VISIBLE left): slivers stay
            _check_boxes_on_objects(img, target["boxes"], 0.3 if "mixup" in augment else 0.5,
                                    0.3 if "mosaic" in augment else 0.1,
                                    0.4 if "rotation" in augment else 0.5)  # a rotated object fills less of its box


def test_wrong_boxes_fail_the_check():
    ds = _train_set("mosaic", mosaic_prob=1.0)
    torch.manual_seed(0)
    img, target = ds[0]
    with pytest.raises(AssertionError):
        _check_boxes_on_objects(img, target["boxes"] + 15, 0.5)


def test_mosaic_and_mixup_combine_several_images():
    ds = _train_set("mosaic+mixup", mosaic_prob=1.0, mixup_prob=1.0)
    per_image = max(len(r.labels) for r in ds.records)
    counts = []
    for i in range(len(ds)):
        torch.manual_seed(i)
        counts.append(len(ds[i][1]["boxes"]))
    assert max(counts) > 2 * per_image  # boxes from more than two source images


def test_paste_moves_and_clips_boxes():
    canvas = torch.zeros(3, 10, 10, dtype=torch.uint8)
    image = torch.full((3, 6, 6), 7, dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [4.0, 4.0, 6.0, 6.0], [0.0, 0.0, 1.0, 6.0]])
    kept, keep = paste(canvas, image, boxes, 5, -2, min_size=1.0)
    assert (canvas[:, 0:4, 5:10] == 7).all() and canvas[:, 4:, :].sum() == 0 and canvas[:, :, :5].sum() == 0
    # box 0 clipped to the visible 5x4; box 1 fully visible, moved; box 2 keeps 4/6 of its area
    assert keep.tolist() == [True, True, True]
    assert kept.tolist() == [[5.0, 0.0, 10.0, 4.0], [9.0, 2.0, 10.0, 4.0], [5.0, 0.0, 6.0, 4.0]]
    _, keep = paste(canvas, image, torch.tensor([[0.0, 0.0, 6.0, 3.0]]), 0, -2, min_size=1.0)
    assert keep.tolist() == [True]
    _, keep = paste(canvas, image, torch.tensor([[0.0, 0.0, 6.0, 2.5]]), 0, -2, min_size=1.0)
    assert keep.tolist() == [False]  # 0.5 px of 2.5 visible: under min_size


def test_same_seed_same_item_and_close_switches_to_plain_items():
    ds = _train_set("basic+mosaic+mixup", mosaic_prob=1.0, mixup_prob=1.0)
    items = SeededItems(ds)
    a, b = items[(2, 1234)], items[(2, 1234)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    ds.active = False
    plain = SeededItems(ds.base)[(2, 1234)]
    c = items[(2, 1234)]
    assert torch.equal(c[0], plain[0]) and torch.equal(c[1]["boxes"], plain[1]["boxes"])


def test_policy_strings():
    assert parse_det_augment(True, "data.augment") == "basic"
    assert parse_det_augment(False, "data.augment") == "none"
    assert parse_det_augment("mixup+Basic+mosaic", "data.augment") == "basic+mosaic+mixup"
    assert set(POLICIES[:8]) <= set(DET_AUGMENT_POLICIES)
    with pytest.raises(ConfigError, match=r"data.augment: 'randaugment' is not available for detection: "
                                          r"torchvision's v2 version rejects bounding boxes; allowed: none, basic"):
        parse_det_augment("basic+randaugment", "data.augment")
    with pytest.raises(ConfigError, match="unknown augmentation policy 'blur'"):
        parse_det_augment("blur", "data.augment")
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        parse_det_augment("none+mosaic", "data.augment")
    with pytest.raises(ConfigError, match="data.augment"):
        load_config(ROOT / "configs/det/bccd.yaml", ["data.augment=trivialaugment"])


def test_shipped_default_pipeline_is_unchanged_by_an_empty_policy_list():
    cfg = VOCConfig(size=SIZE)
    assert cfg.augment == "basic"
    names = [type(t).__name__ for t in build_transforms(cfg, train=True).transforms]
    assert names[:2] == ["RandomPhotometricDistort", "RandomHorizontalFlip"] and "RandomRotation" not in names
    assert [type(t).__name__ for t in build_transforms(VOCConfig(size=SIZE, augment="none"), True).transforms] == \
        [type(t).__name__ for t in build_transforms(cfg, train=False).transforms]


def test_close_epoch():
    assert close_epoch(30, 10) == 20
    assert close_epoch(10, 0.1) == 9 and close_epoch(10, 0.0) == 10 and close_epoch(5, 10) == 0
    assert close_epoch(30, 0.15) == 25


# ----------------------------------------------------------------------------- trainer: switch-off, exact resume
def _digits_cfg(run_dir, *extra):
    return load_config(ROOT / "configs/det/digits.yaml", [
        f"run.dir={run_dir}", "run.threads=1", "model.flavor=tiny", "model.input_size=64", "data.size=64",
        "data.canvas=64", "data.digit_min=12", "data.digit_max=24", "data.num_train=24", "data.num_val=8",
        "data.num_test=8", "data.batch_size=8", "data.eval_batch_size=8", "train.epochs=3", "train.eval_every=9",
        "train.ckpt_every=4", "data.augment=basic+mosaic+mixup", "data.close_mosaic=1", *extra])


class Watch(Callback):
    def __init__(self, crash_at: int | None = None):
        self.seen, self.crash_at = [], crash_at

    def on_step_start(self, trainer, step):
        if step == self.crash_at:
            raise KeyboardInterrupt

    def on_step_end(self, trainer, step, out):
        self.seen.append((trainer.state["epoch"], trainer.data.train.active))


def test_close_mosaic_switches_off_in_the_last_epoch_and_resume_and_workers_are_exact(tmp_path):
    rec = Watch()
    fit(_digits_cfg(tmp_path / "ref"), callbacks=[rec])
    assert [e for e, _ in rec.seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(active == (epoch < 2) for epoch, active in rec.seen)
    assert "mosaic/mixup off" in (tmp_path / "ref" / "log.txt").read_text()

    crash = Watch(crash_at=6)  # last.pt at step 4 (mid-epoch 1): resumed with mosaic on, then off
    trainer = Trainer(_digits_cfg(tmp_path / "cut"), callbacks=[crash])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    trainer.run_lock.release()
    again = Watch()
    Trainer(_digits_cfg(tmp_path / "cut"), resume=True, callbacks=[again]).fit()
    assert again.seen == rec.seen[4:]
    a, b = load_file(str(tmp_path / "ref/model.safetensors")), load_file(str(tmp_path / "cut/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after resume"
    # loader workers get the dataset as the epoch start left it: the same items as in-process loading
    fit(_digits_cfg(tmp_path / "workers", "data.num_workers=2"))
    c = load_file(str(tmp_path / "workers/model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a), "weights differ with loader workers"


def test_callback_only_for_detection_mosaic_or_mixup(tmp_path):
    assert CloseMosaic.from_config(_digits_cfg(tmp_path)) is not None
    assert CloseMosaic.from_config(_digits_cfg(tmp_path, "data.augment=basic+rotation")) is None
    cls_cfg = load_config(ROOT / "configs/cls/digits.yaml", ["data.augment=basic+mixup"])
    assert CloseMosaic.from_config(cls_cfg) is None


def test_sampler_keys_reach_mosaic_partners_deterministically():
    ds = _train_set("mosaic", mosaic_prob=1.0)
    assert isinstance(ds, MosaicMixup)
    sampler = ResumableSampler(len(ds), seed=3)
    sampler.set_epoch(1, 2)
    keys = list(sampler)
    first = [SeededItems(ds)[k][1]["boxes"] for k in keys]
    again = [SeededItems(ds)[k][1]["boxes"] for k in keys]
    assert all(torch.equal(x, y) for x, y in zip(first, again))


def test_baselines_get_the_same_augmented_pipeline(tmp_path):
    spec = importlib.util.spec_from_file_location("det_vs_torchvision", ROOT / "benchmarks/det_vs_torchvision.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    common = ["data.augment=basic+mosaic+mixup", "data.close_mosaic=2"]
    configs = {name: load_config(ROOT / "configs/det/bccd.yaml",
                                 bench.train_overrides(name, "small", "/data/bccd", 10, 1, common))
               for name in ("r1_det", "tv_ssdlite320", "tv_fcos_mnv3")}
    datas = [to_dict(c.data) for c in configs.values()]
    assert all(d == datas[0] for d in datas) and datas[0]["augment"] == "basic+mosaic+mixup"
    # a torchvision baseline trains on mosaic + mixup batches like R1-Det
    metrics = fit(_digits_cfg(tmp_path / "fcos", "model.name=tv_fcos_mnv3", "model.flavor=tiny",
                              "model.input_size=64", "train.max_steps=2", "train.eval_every=2"))
    assert metrics["train/steps"] == 2
