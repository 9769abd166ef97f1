"""Prediction on image files: pre-process -> model -> post-process, per family.

Families register a `FamilyIO` (how to turn PIL images into a batch and model outputs into
JSON-safe records); `predict_files` is what `r1 predict` runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from r1.errors import ConfigError, DataError


@dataclass
class FamilyIO:
    preprocess: Callable[[list[Image.Image], dict], torch.Tensor]
    postprocess: Callable[[object, dict, dict], list[dict]]  # (outputs, meta, options) -> records
    draw: Callable | None = None  # (image, record, meta, path, score_thresh=) -> None, for --out


_IO: dict[str, FamilyIO] = {}


def register_io(family: str, io: FamilyIO) -> None:
    _IO[family] = io


def get_io(family: str) -> FamilyIO:
    if family not in _IO:
        raise ConfigError(f"family {family!r} has no image prediction; known: {', '.join(sorted(_IO))}")
    return _IO[family]


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def resize_normalize(images: list[Image.Image], meta: dict) -> torch.Tensor:
    """Resize to meta['preprocess']['size'] (H, W) and normalise with its mean/std -> (B, 3, H, W)."""
    pre = meta["preprocess"]
    h, w = pre["size"]
    mean = np.asarray(pre["mean"], np.float32)[:, None, None]
    std = np.asarray(pre["std"], np.float32)[:, None, None]
    arrays = [(np.asarray(im.resize((w, h), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
              for im in images]
    return torch.from_numpy(np.stack(arrays))


def classification_records(logits, meta: dict, options: dict) -> list[dict]:
    probs = torch.as_tensor(logits).float().softmax(-1)
    k = min(options.get("top_k", 3), probs.shape[-1])
    scores, idx = probs.topk(k, dim=-1)
    classes = meta["classes"]
    return [{"label": classes[int(i[0])], "class_id": int(i[0]), "score": float(s[0]),
             "top": [{"label": classes[int(c)], "class_id": int(c), "score": float(v)} for v, c in zip(s, i)]}
            for s, i in zip(scores, idx)]


register_io("cls", FamilyIO(resize_normalize, classification_records))


@torch.no_grad()
def predict_files(model_path, paths: list[Path], out_dir: Path | None = None, top_k: int = 3,
                  batch_size: int = 16, draw_threshold: float = 0.3):
    """Yield one record per image: {"file": ..., <family fields>}; with `out_dir`, drawn images there
    (detection: the boxes scoring >= `draw_threshold`)."""
    from r1.artifacts import load_model

    model = load_model(model_path)
    io, meta = get_io(model.r1_family), model.r1_meta
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = [open_image(p) for p in chunk]
        records = io.postprocess(model(io.preprocess(images, meta)), meta, {"top_k": top_k, "images": images})
        for path, image, rec in zip(chunk, images, records):
            if out_dir is not None and io.draw is not None:
                target = out_dir / f"{path.stem}.png"
                io.draw(image, rec, meta, target, score_thresh=draw_threshold)
                rec = {**rec, "drawn": str(target)}
            yield {"file": str(path), **rec}


def write_coco_records(model_path, records: list[dict], path: Path) -> Path:
    """Detection records of `predict_files` -> COCO results JSON; images are numbered 1..N in order."""
    from r1.artifacts import read_info
    from r1.evaluate.detection import write_coco_results

    info = read_info(model_path)
    if info["family"] != "det":
        raise ConfigError(f"--coco-json: only detection models write COCO results; this one is {info['family']!r}")
    preds = [{"boxes": torch.tensor(r["boxes"], dtype=torch.float32).reshape(-1, 4),
              "scores": torch.tensor(r["scores"], dtype=torch.float32),
              "labels": torch.tensor(r["class_ids"], dtype=torch.int64)} for r in records]
    return write_coco_results(preds, list(range(1, len(records) + 1)), info["meta"], path)
