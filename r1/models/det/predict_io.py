"""Inference on image files for detection: preprocessing, records in original pixels, drawing.

The det family spec (`family.py`) uses these as its prediction I/O.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import clip_boxes_to_image

from r1.errors import DataError
from r1.models.det.transforms import preprocess, resize_params, stride_shape, unscale

log = logging.getLogger(__name__)


def pil_to_uint8(im) -> torch.Tensor:
    """PIL image -> uint8 (3, H, W) RGB tensor."""
    return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


DRAW_MIN_SIDE = 512  # a drawing whose shorter side is below this is enlarged (whole factor, nearest): labels stay legible
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def draw_scale(width: int, height: int) -> int:
    """The whole factor a drawing of a width x height image is enlarged by (1: drawn as it is). A 128 px
    digit scene is drawn at 4x (512 px): at 1x a 10 px label covers the digit it names."""
    short = min(width, height)
    return max(1, -(-DRAW_MIN_SIDE // max(short, 1))) if short < DRAW_MIN_SIDE else 1


def draw_detections(image: torch.Tensor, pred: dict, classes: list[str], path: str | Path,
                    score_thresh: float = 0.3) -> Path:
    """Draw the boxes scoring >= `score_thresh` with "class score" labels on a uint8 (3, H, W) image and
    save it as PNG: boxes in a colour per class, each label on a filled tag above its box (inside when
    the box touches the top). Small images are enlarged first (`draw_scale`, nearest neighbour), so the
    PNG may be larger than the image; the boxes are scaled with it."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
    k = draw_scale(*im.size)
    if k > 1:
        im = im.resize((im.width * k, im.height * k), Image.Resampling.NEAREST)
    keep = pred["scores"] >= score_thresh
    if bool(keep.any()):
        draw = ImageDraw.Draw(im)
        short = min(im.size)
        font = ImageFont.load_default(size=max(12, round(short / 36)))
        line = max(2, round(short / 256))
        for box, c, score in zip(pred["boxes"][keep].tolist(), pred["labels"][keep].tolist(),
                                 pred["scores"][keep].tolist()):
            x1, y1, x2, y2 = (v * k for v in box)
            colour = PALETTE[int(c) % len(PALETTE)]
            draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
            text = f"{classes[int(c)]} {score:.2f}"
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            w, h = right - left + 2 * line, bottom - top + 2 * line
            ty = y1 - h if y1 - h >= 0 else y1
            draw.rectangle((x1, ty, x1 + w, ty + h), fill=colour)
            draw.text((x1 + line - left, ty + line - top), text, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


@torch.no_grad()
def predict_files(model, paths: list[str | Path], meta: dict, device=torch.device("cpu"),
                  batch_size: int = 8) -> list[tuple[torch.Tensor, dict]]:
    """Image files -> [(uint8 image (3, H, W), detections in that image's pixels)].

    Preprocessing follows `meta["preprocess"]`. DataError names a file that cannot be read.
    """
    from PIL import Image

    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(pil_to_uint8(im))
        except (OSError, ValueError, SyntaxError) as err:
            raise DataError(f"{p}: cannot read image ({err})") from None
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        inputs, scales = zip(*(preprocess(im, meta["preprocess"]) for im in chunk))
        for im, pred, scale in zip(chunk, model(torch.stack(inputs).to(device)), scales):
            pred = {k: v.cpu() for k, v in pred.items()}
            out.append((im, {**pred, "boxes": unscale(pred["boxes"], scale)}))
    return out


# ----------------------------------------------------------------------------- r1.predict hooks
def predict_preprocess(images: list, meta: dict) -> torch.Tensor:
    """PIL images -> (B, 3, S, S) batch, exactly as evaluation preprocesses (letterbox or stretch).

    A dynamic-HW model (`preprocess.stride` in its meta): each image letterboxed to the configured
    size and padded to a multiple of the stride; the batch padded (right/bottom) to its largest H, W."""
    pre = meta["preprocess"]
    if not (pre.get("stride") and pre["letterbox"]):
        return torch.stack([preprocess(pil_to_uint8(im), pre)[0] for im in images])
    shapes = [stride_shape(im.height, im.width, pre) for im in images]
    pad_to = (max(h for h, _ in shapes), max(w for _, w in shapes))
    return torch.stack([preprocess(pil_to_uint8(im), pre, pad_to)[0] for im in images])


def predict_records(outputs: list[dict], meta: dict, options: dict) -> list[dict]:
    """Detections -> JSON-safe records in each original image's pixels, clipped to the image
    (options["images"]: the PIL images)."""
    pre, classes, records = meta["preprocess"], meta["classes"], []
    for pred, im in zip(outputs, options["images"]):
        nh, nw = resize_params(im.height, im.width, pre["size"][0], pre["letterbox"])
        boxes = unscale(pred["boxes"].detach().cpu().float(), torch.tensor([nw / im.width, nh / im.height]))
        boxes = clip_boxes_to_image(boxes, (im.height, im.width))  # letterbox padding is not the image
        # Rounded in numpy and listed once: per-element Python (a 0-d tensor or a round() call
        # per number) cost ~1 ms per image of 100 boxes, a tenth of the detector's own time.
        labels = pred["labels"].tolist()
        scores = pred["scores"].detach().cpu().double().numpy()
        records.append({"boxes": np.round(boxes.double().numpy(), 2).tolist(),
                        "scores": np.round(scores, 4).tolist(),
                        "class_ids": labels, "labels": [classes[i] for i in labels]})
    return records


def predict_draw(image, record: dict, meta: dict, path, score_thresh: float = 0.3) -> None:
    """Draw one `predict_records` record's boxes scoring >= `score_thresh` on its PIL image, saved as
    PNG at `path`; logs how many were drawn and how many fell below the threshold."""
    scores = torch.tensor(record["scores"], dtype=torch.float32)
    pred = {"boxes": torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4),
            "scores": scores, "labels": torch.tensor(record["class_ids"], dtype=torch.int64)}
    path = draw_detections(pil_to_uint8(image), pred, meta["classes"], path, score_thresh)
    drawn = int((scores >= score_thresh).sum())
    below = len(scores) - drawn
    line = f"{path}: drew {drawn} box(es) scoring >= {score_thresh:g}, {below} below"
    if drawn == 0 and below:
        line += f" (best {float(scores.max()):.3f}; a lower --draw-threshold draws them)"
    log.info(line)
