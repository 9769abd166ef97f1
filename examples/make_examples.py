"""Re-create the sample inputs in examples/ (run from the repository root: python examples/make_examples.py).

digit-3.png, digit-7.png: held-out test digits of the embedded `digits` data, rendered exactly as
the data module feeds them (8x8 -> 32x32 bilinear, white ink on black).
digit-scene.png: test scene 0 of configs/det/digits.yaml's digit scenes (r1/models/det/data.py).
sortofclevr-scene.png: test image 0 of Sort-of-CLEVR (data.seed 0) for the mm family (r1/models/mm/data.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from r1.config import load_config
from r1.data import build_data
from r1.data.formats import split_indices

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def digit_pngs(labels=(3, 7), size: int = 32) -> list[str]:
    from sklearn.datasets import load_digits

    cfg = load_config(ROOT / "configs/cls/digits.yaml").data
    d = load_digits()
    _, _, test_i = split_indices(len(d.target), cfg.val_frac, cfg.test_frac, cfg.split_seed)
    written = []
    for label in labels:
        i = next(i for i in test_i if d.target[i] == label)
        x = torch.tensor(d.images[i], dtype=torch.float32)[None, None] / 16.0
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        img = (x[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(img, "L").save(HERE / f"digit-{label}.png", optimize=True)
        written.append(f"digit-{label}.png: load_digits() index {i}, label {label}")
    return written


def scene_png(index: int = 0) -> str:
    cfg = load_config(ROOT / "configs/det/digits.yaml").data
    scenes = build_data(cfg, seed=0).test
    img = scenes.load(index).permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(img), "RGB").save(HERE / "digit-scene.png", optimize=True)
    rec = scenes.records[index]
    boxes = [{"label": int(c), "box": [int(v) for v in b]} for b, c in zip(rec.boxes.tolist(), rec.labels.tolist())]
    return f"digit-scene.png: test scene {index}, boxes (x0, y0, x1, y1) {json.dumps(boxes)}"


def sortofclevr_png() -> str:
    from r1.models.mm.data import COLOURS, SHAPES, generate_split

    split = generate_split(1, 75, 4, 0, 2)
    Image.fromarray(split["images"][0].permute(1, 2, 0).numpy(), "RGB").save(HERE / "sortofclevr-scene.png",
                                                                               optimize=True)
    objects = [f"{c} {SHAPES[int(s)]}" for c, s in zip(COLOURS, split["shapes"][0])]
    return f"sortofclevr-scene.png: Sort-of-CLEVR test image 0: {', '.join(objects)}"


if __name__ == "__main__":
    for line in digit_pngs() + [scene_png(), sortofclevr_png()]:
        print(line)
