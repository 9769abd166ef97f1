"""Classification data: the embedded digits, ImageFolder, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from r1.config import load_config
from r1.data import build_data
from r1.errors import DataError
from tests.conftest import ROOT, run_cli, run_r1, tiny_cls_overrides


def test_digits_split_is_fixed_and_disjoint():
    cfg = load_config(ROOT / "configs/cls/digits.yaml").data
    a, b = build_data(cfg, seed=0), build_data(cfg, seed=123)  # run.seed does not move the split
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 270, 270)
    assert (a.test.images == b.test.images).all()
    x, y = a.val[0]
    assert x.shape == (3, 32, 32) and x.dtype.is_floating_point and 0 <= int(y) < 10
    assert a.meta["num_classes"] == 10 and a.meta["preprocess"]["size"] == [32, 32]


def _image_folder(root, per_class=6, size=20):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_imagefolder_classes_and_splits(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={root}", "data.img_size=16",
                             "data.val_frac=0.25", "data.test_frac=0.25"]).data
    b = build_data(cfg)
    assert b.meta["classes"] == ["cat", "dog"]
    assert (len(b.train), len(b.val), len(b.test)) == (6, 3, 3)
    assert b.train[0][0].shape == (3, 16, 16)


def test_grouped_split_keeps_each_group_in_one_split_and_is_the_plain_split_without_groups():
    from r1.data.formats import split_indices

    plain = split_indices(100, 0.2, 0.2, seed=3)
    assert split_indices(100, 0.2, 0.2, seed=3, groups=list(range(100))) == plain  # singletons: unchanged
    groups = [i // 2 for i in range(100)]  # pairs: 0,1 | 2,3 | ...
    parts = split_indices(100, 0.2, 0.2, seed=3, groups=groups)
    assert sorted(sum(parts, [])) == list(range(100))
    where = {i: k for k, part in enumerate(parts) for i in part}
    assert all(where[i] == where[2 * (i // 2)] for i in range(100))
    assert all(len(p) in (20, 21) for p in parts[1:])  # the shares, to within one group
    big = [0] * 10 + list(range(10, 100))  # one group of 10: over 10% of a held-out share -> train
    assert set(range(10)) <= set(split_indices(100, 0.2, 0.2, seed=3, groups=big)[0])


def test_imagefolder_group_duplicates_keeps_copies_together(tmp_path):
    root = _image_folder(tmp_path / "imgs", per_class=10)
    for c in ("cat", "dog"):  # three re-encoded near-copies of each class's first image
        with Image.open(root / c / "0.png") as im:
            for k in range(3):
                im.convert("RGB").save(root / c / f"0-copy{k}.jpg", quality=90 - 10 * k)
    over = ["data.name=imagefolder", f"data.root={root}", "data.img_size=16", "data.val_frac=0.25",
            "data.test_frac=0.25", "data.split_seed=1"]

    def split_of(bundle):
        return {bundle.train.base.samples[i][0].split("/imgs/")[1]: name
                for name, ds in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test))
                for i in ds.indices}

    grouped = split_of(build_data(load_config(None, [*over, "data.group_duplicates=true"]).data))
    for c in ("cat", "dog"):
        assert len({grouped[f"{c}/0.png"], *(grouped[f"{c}/0-copy{k}.jpg"] for k in range(3))}) == 1
    plain = split_of(build_data(load_config(None, over).data))
    assert any(len({plain[f"{c}/0.png"], *(plain[f"{c}/0-copy{k}.jpg"] for k in range(3))}) > 1
               for c in ("cat", "dog"))  # what the option prevents (seed 1 scatters a group)


def test_corrupt_image_is_skipped_counted_and_reported(tmp_path):
    root = _image_folder(tmp_path / "imgs", per_class=12)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    over = ["data.name=imagefolder", f"data.root={root}", "data.img_size=16", "model.in_features=768",
            "model.name=mlp", "model.flavor=tiny", "data.batch_size=4"]
    proc = run_r1("train", "configs/cls/digits.yaml", *tiny_cls_overrides(tmp_path / "run"), *over, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 unreadable image(s)" in proc.stderr and "broken.png" in proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/skipped_images"] == 1


def test_empty_and_missing_dataset_errors(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path / 'empty'}"]).data
    with pytest.raises(DataError, match="empty dataset"):
        build_data(cfg)
    proc = run_cli("train", "configs/cls/digits.yaml", "data.name=imagefolder", f"data.root={tmp_path / 'empty'}",
                  f"run.dir={tmp_path / 'r'}")
    assert proc.returncode == 3 and proc.stderr.strip().startswith("error: ") and "empty dataset" in proc.stderr
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path / 'nope'}"]).data
    with pytest.raises(DataError, match="directory not found"):
        build_data(cfg)
