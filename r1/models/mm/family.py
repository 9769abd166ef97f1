"""The `mm` family spec: image + question in, answer out (R1-MM, CNN+MLP, CNN+RN)."""
from __future__ import annotations

import torch

from r1.family import ExportHook, FamilySpec, register_family


def mm_kd(student, teacher, inputs, targets):
    """Logit KD on the answer logits (one student pass: its task losses and logits together)."""
    task, s_logits = student.losses_and_logits(inputs, targets)
    with torch.no_grad():
        t_logits = teacher(inputs)
    return task, s_logits, t_logits, None


def question_image_batch(meta: dict, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """n random images at the model's size and n random full-length questions (bench, export)."""
    h, w = meta["preprocess"]["size"]
    length = int(meta.get("max_len") or 16)
    return {"images": torch.randn(n, 3, h, w, generator=generator),
            "tokens": torch.randint(0, int(meta["vocab_size"]), (n, length), generator=generator),
            "mask": torch.ones(n, length, dtype=torch.bool)}


def export_mm(*args, **kw):
    """Two-input ONNX export (`r1.models.mm.export`, imported on first use)."""
    from r1.models.mm.export import export_mm as run
    return run(*args, **kw)


SPEC = register_family(FamilySpec(
    name="mm", summary="visual question answering: an image and a question in, an answer out",
    evaluate="r1.models.mm.metrics:evaluate_vqa", monitor="accuracy", mode="max", tolerance=0.02,
    inputs="image+text", predictor="r1.models.mm.predictor:VQAPredictor",
    runtimes=("torch", "onnx", "onnx-int8"), export=ExportHook(run=export_mm),
    kd=mm_kd, example_inputs=question_image_batch, primary_loss="answer"))
