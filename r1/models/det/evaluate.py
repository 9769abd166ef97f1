"""Detection metrics with pycocotools and COCO results JSON (drawing: `predict_io.draw_detections`).

Ground truth and predictions are converted to COCO form in *original image* pixels: category
ids are training index + 1 (or `meta["category_ids"]` for COCO data), image ids >= 1,
area = w * h of the box, iscrowd = 0.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from r1.models.det.transforms import unscale

log = logging.getLogger(__name__)

SUMMARY_KEYS = ["mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"]


def _xywh(boxes: torch.Tensor) -> list[list[float]]:
    b = boxes.detach().float().cpu()
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1).tolist()


def category_ids(meta: dict) -> list[int]:
    """COCO category id of each training index."""
    return list(meta.get("category_ids") or range(1, meta["num_classes"] + 1))


def to_coco_results(preds: list[dict], image_ids: list[int], cat_ids: list[int]) -> list[dict]:
    """Per-image {"boxes" x1y1x2y2, "scores", "labels" 0-based} -> COCO results list (bbox as xywh)."""
    out = []
    for p, img_id in zip(preds, image_ids):
        for box, score, label in zip(_xywh(p["boxes"]), p["scores"].tolist(), p["labels"].tolist()):
            out.append({"image_id": int(img_id), "category_id": cat_ids[int(label)],
                        "bbox": [round(v, 2) for v in box], "score": round(float(score), 5)})
    return out


def write_coco_results(preds: list[dict], image_ids: list[int], meta: dict, path: str | Path) -> Path:
    """Write predictions as a COCO results JSON (list of {image_id, category_id, bbox, score})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_coco_results(preds, image_ids, category_ids(meta))))
    return path


def coco_ground_truth(gts: list[dict], image_ids: list[int], sizes: list[tuple[int, int]],
                      classes: list[str], cat_ids: list[int]) -> COCO:
    """Per-image {"boxes", "labels"} (original pixels) -> an indexed pycocotools COCO object."""
    images, anns = [], []
    for gt, img_id, (h, w) in zip(gts, image_ids, sizes):
        images.append({"id": int(img_id), "width": int(w), "height": int(h)})
        for box, label in zip(_xywh(gt["boxes"]), gt["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": int(img_id), "category_id": cat_ids[int(label)],
                         "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c, "name": n} for c, n in zip(cat_ids, classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


AREAS = {"mAP_small": (0, 32 ** 2), "mAP_medium": (32 ** 2, 96 ** 2), "mAP_large": (96 ** 2, float("inf"))}


def coco_metrics(gts: list[dict], preds: list[dict], image_ids: list[int], sizes: list[tuple[int, int]],
                 classes: list[str], cat_ids: list[int] | None = None) -> dict[str, float | None]:
    """COCO box metrics: mAP (AP@[.5:.95]), mAP50, mAP75, mAP_small/medium/large, AR100, AP/<class>.

    A metric the ground truth cannot measure is None (null in metrics.json), not 0: mAP_large of
    scenes without a large object (COCO areas: small < 32^2 <= medium < 96^2 <= large), AP/<class> of
    a class with no object in the split. Without any detection, the measurable ones are 0."""
    cat_ids = cat_ids or list(range(1, len(classes) + 1))
    gt = coco_ground_truth(gts, image_ids, sizes, classes, cat_ids)
    results = to_coco_results(preds, image_ids, cat_ids)
    anns = gt.dataset["annotations"]
    has_area = {k: any(lo <= a["area"] < hi for a in anns) for k, (lo, hi) in AREAS.items()}
    has_class = {c: any(a["category_id"] == cid for a in anns) for c, cid in zip(classes, cat_ids)}
    metrics = ({k: 0.0 if has_area.get(k, True) else None for k in SUMMARY_KEYS} | {"AR100": 0.0}
               | {f"AP/{c}": 0.0 if has_class[c] else None for c in classes})
    if not results or not anns:  # (no object at all: mAP stays 0, so a run monitoring it still compares)
        return metrics
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) if s > -1 else None for s in ev.stats]  # -1: no such objects
    metrics.update(zip(SUMMARY_KEYS, stats[:6]))
    metrics["AR100"] = stats[8]
    prec = ev.eval["precision"]  # (iou T, recall R, class K, area A, maxdets M)
    for k, name in enumerate(classes):
        p = prec[:, :, k, 0, -1]
        metrics[f"AP/{name}"] = float(p[p > -1].mean()) if (p > -1).any() else None
    return metrics


@torch.no_grad()
def evaluate_detection(model, loader, meta: dict, device, out_dir=None) -> dict[str, float]:
    """Run `model(images)` over `loader` and score with pycocotools in original image pixels."""
    gts, preds, ids, sizes = [], [], [], []
    for batch in loader:
        if batch is None:  # every image of the batch was unreadable
            continue
        images, targets = batch
        for pred, t in zip(model(images.to(device)), targets):
            scale = t.get("scale", torch.ones(2))
            preds.append({k: v.cpu() for k, v in pred.items()} | {"boxes": unscale(pred["boxes"].cpu(), scale)})
            gts.append({"boxes": t.get("gt_boxes", unscale(t["boxes"], scale)),
                        "labels": t.get("gt_labels", t["labels"])})
            ids.append(int(t["image_id"]))
            sizes.append(tuple(int(v) for v in t["orig_size"]))
    metrics = coco_metrics(gts, preds, ids, sizes, list(meta["classes"]), category_ids(meta))
    if out_dir is not None:
        write_coco_results(preds, ids, meta, Path(out_dir) / "detections.json")
    return metrics


def write_coco_records(info: dict, records: list[dict], path: Path) -> Path:
    """`predict_records` records -> a COCO results JSON; images are numbered 1..N in order."""
    preds = [{"boxes": torch.tensor(r["boxes"], dtype=torch.float32).reshape(-1, 4),
              "scores": torch.tensor(r["scores"], dtype=torch.float32),
              "labels": torch.tensor(r["class_ids"], dtype=torch.int64)} for r in records]
    return write_coco_results(preds, list(range(1, len(records) + 1)), info["meta"], Path(path))
