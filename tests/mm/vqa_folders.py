"""Tiny VOC and COCO folders with known boxes, written in the test's tmp dir (never ../shared/data)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["big_bird", "cat", "dog"]
SIZE = (100, 80)  # (w, h)
# image id -> [(class, x1, y1, x2, y2)]
SCENES = {
    "a": [("cat", 10, 10, 20, 20), ("cat", 30, 10, 45, 25), ("dog", 50, 30, 90, 70)],
    "b": [("big_bird", 0, 0, 50, 50), ("dog", 60, 0, 70, 10), ("dog", 60, 20, 70, 30)],
    "c": [("cat", 0, 0, 10, 10), ("dog", 20, 20, 30, 30)],  # equal areas, equal counts: no largest/smallest/most
    "d": [],
    "e": [("cat", 5, 5, 15, 15), ("cat", 20, 5, 30, 15), ("cat", 35, 5, 45, 15), ("dog", 50, 40, 60, 50)],
}
SPLITS = {"train": ["a", "b", "c", "d", "e"], "val": ["a", "c"], "test": ["b", "e"]}
COLOURS = {"big_bird": (200, 40, 40), "cat": (40, 200, 40), "dog": (40, 40, 200)}


def scene_image(objects: list) -> Image.Image:
    img = np.full((SIZE[1], SIZE[0], 3), 245, np.uint8)
    for name, x1, y1, x2, y2 in objects:
        img[y1:y2, x1:x2] = COLOURS[name]
    return Image.fromarray(img)


def write_voc(root: Path) -> Path:
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for key, objects in SCENES.items():
        scene_image(objects).save(root / "JPEGImages" / f"{key}.jpg", quality=95)
        objs = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                       f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for n, x1, y1, x2, y2 in objects)
        (root / "Annotations" / f"{key}.xml").write_text(
            f"<annotation><filename>{key}.jpg</filename><size><width>{SIZE[0]}</width><height>{SIZE[1]}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")
    for split, ids in SPLITS.items():
        (root / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def write_coco(root: Path) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    ids = {key: n + 1 for n, key in enumerate(SCENES)}
    for key, objects in SCENES.items():
        scene_image(objects).save(root / "images" / f"{key}.jpg", quality=95)
    cats = [{"id": 10 + i, "name": c} for i, c in enumerate(CLASSES)]
    for split, keys in SPLITS.items():
        anns = [{"id": len(keys) * 100 + n * 10 + k, "image_id": ids[key], "category_id": 10 + CLASSES.index(name),
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                for n, key in enumerate(keys) for k, (name, x1, y1, x2, y2) in enumerate(SCENES[key])]
        data = {"images": [{"id": ids[k], "file_name": f"{k}.jpg", "width": SIZE[0], "height": SIZE[1]} for k in keys],
                "annotations": anns, "categories": cats}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root
