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


def draw_detections(image: torch.Tensor, pred: dict, classes: list[str], path: str | Path,
                    score_thresh: float = 0.3) -> Path:
    """Draw the boxes scoring >= `score_thresh` with "class score" labels on a uint8 (3, H, W) image
    and save it as PNG (with no such box, the image as it is)."""
    from PIL import Image

    keep = pred["scores"] >= score_thresh
    drawn = image
    if bool(keep.any()):  # torchvision warns "No box was drawn" when handed none
        from torchvision.utils import draw_bounding_boxes

        labels = [f"{classes[int(c)]} {float(s):.2f}" for c, s in zip(pred["labels"][keep], pred["scores"][keep])]
        drawn = draw_bounding_boxes(image, pred["boxes"][keep].float(), labels, width=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(drawn.permute(1, 2, 0).numpy())).save(path)
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
