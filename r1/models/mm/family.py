"""The `mm` family spec: image + question in, answer out (R1-MM, CNN+MLP, CNN+RN)."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from r1.errors import ConfigError
from r1.family import ExportHook, FamilySpec, register_family


@contextmanager
def cross_layer_features(model):
    """While inside, every cross-modal layer of `model` (R1-MM) appends its `LayerFeatures` to the
    yielded list: hidden states text (B, T, D) (padding masked) and image (B, N, D); attention maps
    text->image (B, H, T, N) (padded query rows masked) and image->text (B, H, N, T)."""
    from r1.compress.distill import LayerFeatures

    layers = getattr(model, "cross", None)
    if not layers:
        name = getattr(getattr(model, "r1_config", None), "name", type(model).__name__)
        raise ConfigError(f"distill.feature_weight: model {name} has no cross-modal layers to distill "
                          "(r1_mm has); set it to 0 for logit KD only")
    captured: list = []

    def keep(layer, args, output):
        t, v, _ = output
        mask = args[2]
        captured.append(LayerFeatures(hidden=[(t, mask), (v, None)],
                                      attention=[(layer.t2i.last_weights, mask), (layer.i2t.last_weights, None)]))

    attention = [m for layer in layers for m in (layer.t2i, layer.i2t)]
    handles = [layer.register_forward_hook(keep) for layer in layers]
    for m in attention:
        m.keep_weights = True
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
        for m in attention:
            m.keep_weights, m.last_weights = False, None


def mm_kd(student, teacher, inputs, targets, features: bool = False):
    """Logit KD on the answer logits (one student pass: its task losses and logits together);
    `features`: also the cross-modal layers' hidden states and attention maps (TinyBERT-style).
    `targets` None: no task losses (the distiller's probe)."""
    if not features:
        task, s_logits = student.losses_and_logits(inputs, targets)
        with torch.no_grad():
            t_logits = teacher(inputs)
        return task, s_logits, t_logits, None
    with cross_layer_features(student) as s_layers:
        task, s_logits = ({}, student(inputs)) if targets is None else student.losses_and_logits(inputs, targets)
    with torch.no_grad(), cross_layer_features(teacher) as t_layers:
        t_logits = teacher(inputs)
    return task, s_logits, t_logits, None, (s_layers, t_layers)


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


def load_predictor(path, runtime: str | None = None, threads: int = 1):
    """The family's predictor for `runtime`: torch, or onnxruntime (onnx, onnx-int8) over its own graph."""
    from r1.inference.runtimes import infer_runtime

    if (runtime or infer_runtime(path)) in ("onnx", "onnx-int8"):
        from r1.models.mm.onnx_predictor import OnnxVQAPredictor
        return OnnxVQAPredictor.load(path, runtime, threads)
    from r1.models.mm.predictor import VQAPredictor
    return VQAPredictor.load(path, runtime, threads)


SPEC = register_family(FamilySpec(
    name="mm", summary="visual question answering: an image and a question in, an answer out",
    evaluate="r1.models.mm.metrics:evaluate_vqa", monitor="accuracy", mode="max", tolerance=0.02,
    inputs="image+text", predictor=load_predictor,
    runtimes=("torch", "onnx", "onnx-int8"), export=ExportHook(run=export_mm),
    kd=mm_kd, example_inputs=question_image_batch, primary_loss="answer",
    schema="r1.models.mm.schema:Answer", headline=("accuracy", "accuracy_relational", "accuracy_nonrelational"),
    depends=("lm", "det")))
