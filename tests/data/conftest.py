"""Small datasets written into tmp_path: an ImageFolder with planted problems, a tiny VOC set, and a
text corpus with planted garbage lines."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED

DATA = Path(os.environ.get("R1_SHARED_DATA", SHARED))  # a checkout elsewhere points it at ../shared/data
BCCD = DATA / "bccd"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"


def blob_image(seed: int, size: int = 32) -> Image.Image:
    """A smooth random picture (4x4 colour noise, upscaled): distinct per seed, stable under re-encoding."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    return small.resize((size, size), Image.Resampling.BICUBIC)


def write_imagefolder(root: Path, counts: dict[str, dict[str, int]], seed0: int = 0) -> dict[str, list[Path]]:
    """root/<split>/<class>/<n>.png with counts[split][class] distinct images; returns paths per class."""
    paths: dict[str, list[Path]] = {}
    seed = seed0
    for split, per in counts.items():
        for cls, n in per.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                p = root / split / cls / f"{cls}_{i}.png"
                blob_image(seed).save(p)
                paths.setdefault(f"{split}/{cls}", []).append(p)
    return paths


@pytest.fixture
def planted(tmp_path) -> dict:
    """ImageFolder with: an exact and a near (re-encoded, resized) duplicate of training images in val
    and test, a corrupt file, an empty class and a skewed class (30 vs 4 training images)."""
    root = tmp_path / "planted"
    paths = write_imagefolder(root, {"train": {"cat": 30, "dog": 4}, "val": {"cat": 5, "dog": 3},
                                     "test": {"cat": 5, "dog": 3}})
    (root / "train" / "empty").mkdir()
    exact_src, near_src = paths["train/cat"][0], paths["train/cat"][1]
    shutil.copy(exact_src, root / "val" / "cat" / "leak_exact.png")
    Image.open(near_src).convert("RGB").resize((40, 40)).save(root / "test" / "cat" / "leak_near.jpg", quality=90)
    corrupt = root / "train" / "dog" / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image" * 10)
    return {"root": root, "exact": (exact_src, root / "val" / "cat" / "leak_exact.png"),
            "near": (near_src, root / "test" / "cat" / "leak_near.jpg"), "corrupt": corrupt}


def write_voc(root: Path, images: list[tuple[str, str, list[tuple[str, list[float]]]]]) -> Path:
    """images: (id, split, [(class, [x1, y1, x2, y2]), ...]) -> a VOC folder with 48x40 JPEGs."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    splits: dict[str, list[str]] = {}
    for n, (img_id, split, objs) in enumerate(images):
        blob_image(100 + n, 48).crop((0, 0, 48, 40)).save(root / "JPEGImages" / f"{img_id}.jpg")
        body = "".join(f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                       f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                       for c, b in objs)
        (root / "Annotations" / f"{img_id}.xml").write_text(
            f"<annotation><filename>{img_id}.jpg</filename><size><width>48</width><height>40</height>"
            f"<depth>3</depth></size>{body}</annotation>")
        splits.setdefault(split, []).append(img_id)
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


WORDS = ("the king queen lord lady good noble brave sweet fair night day love death heart hand sword crown "
         "speaks walks sees holds takes gives loves fears grace honour friend father mother son").split()


def clean_lines(n: int, seed: int = 0) -> list[str]:
    """English-like lines from a small vocabulary (what a reference LM learns in a few seconds)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 10))).capitalize() + "." for _ in range(n)]


def garbage_lines(n: int, seed: int = 1) -> list[str]:
    """Random printable characters and symbols: the kind of line a scraper lets through."""
    rng = random.Random(seed)
    pool = "qxzjkvw0123456789#$%^&*{}[]<>|~@QXZJKVW" + "ÆØÅßæ¤¥§"
    return ["".join(rng.choice(pool) for _ in range(rng.randint(20, 50))) for _ in range(n)]
