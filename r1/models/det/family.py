"""The `det` family spec: object detection (R1-Det and the torchvision baselines)."""
from __future__ import annotations

import torch

from r1.errors import ConfigError
from r1.family import FamilyIO, FamilySpec, register_family
from r1.inference.images import image_batch
from r1.models.det.predict_io import predict_draw, predict_preprocess, predict_records


def detection_kd(student, teacher, images, targets):
    """KD on the class logits of the anchors the student's assigner made positive."""
    if not hasattr(student, "distill_outputs") or not hasattr(teacher, "forward_raw"):
        raise ConfigError("distill: detection KD needs R1-Det student and teacher (distill_outputs / forward_raw)")
    s = student.distill_outputs(images, targets)
    with torch.no_grad():
        t_cls, _ = teacher.forward_raw(images)
    if t_cls.shape != s["cls"].shape:
        raise ConfigError(f"distill: teacher anchors/classes {tuple(t_cls.shape[1:])} differ from the student's "
                          f"{tuple(s['cls'].shape[1:])}; use the same levels, anchors and input size")
    task = student.loss(s["cls"], s["box"], s["anchors"], s["matched"], targets)
    return task, s["cls"], t_cls, s["matched"] >= 0


SPEC = register_family(FamilySpec(
    name="det", summary="object detection: boxes, labels and scores per image",
    evaluate="r1.models.det.evaluate:evaluate_detection", monitor="mAP", mode="max", tolerance=0.05,
    io=FamilyIO(predict_preprocess, predict_records, predict_draw), export="r1.models.det.export:EXPORT",
    kd=detection_kd, prune="r1.compress.prune:prune_l1", example_inputs=image_batch,
    writers={"coco": "r1.models.det.evaluate:write_coco_records"},
    schema="r1.models.det.schema:Detections", headline=("mAP", "mAP50"),
    depends=("cls",)))
