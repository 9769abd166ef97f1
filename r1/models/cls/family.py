"""The `cls` family spec: image classification (R1 MobileNetV3, slimmable variant, ResNet teacher, MLP)."""
from __future__ import annotations

import torch

from r1.family import ExportHook, FamilyIO, FamilySpec, register_family
from r1.inference.images import image_batch, resize_normalize


def classification_records(logits, meta: dict, options: dict) -> list[dict]:
    """Logits (B, K) -> per image: the top class and the `top_k` most likely classes with scores."""
    probs = torch.as_tensor(logits).float().softmax(-1)
    k = min(options.get("top_k", 3), probs.shape[-1])
    scores, idx = probs.topk(k, dim=-1)
    classes = meta["classes"]
    return [{"label": classes[int(i[0])], "class_id": int(i[0]), "score": float(s[0]),
             "top": [{"label": classes[int(c)], "class_id": int(c), "score": float(v)} for v, c in zip(s, i)]}
            for s, i in zip(scores, idx)]


def classification_kd(student, teacher, images, labels):
    s_logits = student(images)
    with torch.no_grad():
        t_logits = teacher(images)
    return student.loss(s_logits, labels), s_logits, t_logits, None


SPEC = register_family(FamilySpec(
    name="cls", summary="image classification: one label per image",
    evaluate="r1.models.cls.evaluate:evaluate_classification", monitor="accuracy", mode="max", tolerance=0.015,
    io=FamilyIO(resize_normalize, classification_records), export=ExportHook(output_names=lambda options: ["logits"]),
    kd=classification_kd, prune="r1.compress.prune:prune_l1", example_inputs=image_batch,
    schema="r1.models.cls.schema:Classification", headline=("accuracy",)))
