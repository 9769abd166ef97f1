"""The `lm` family spec: language models (R1-LM, the GPT baseline): text in, text out."""
from __future__ import annotations

import torch

from r1.errors import ConfigError
from r1.family import ExportHook, FamilySpec, register_family


def lm_kd(student, teacher, idx, targets):
    """KD on next-token logits of the positions that carry a target (response tokens when masked).
    The student's logits are the ones its loss pass kept (`keep_train_logits`: `train_logits`, taken
    here); a model that does not keep them gets a second pass."""
    net = getattr(student, "module", student)
    net.keep_train_logits = True
    task = student(idx, targets)
    s_logits = net.__dict__.pop("train_logits", None)
    if s_logits is None:
        s_logits = student(idx)
    with torch.no_grad():
        t_logits = teacher(idx)
    if t_logits.shape != s_logits.shape:
        raise ConfigError(f"distill: teacher logits {tuple(t_logits.shape[1:])} differ from the student's "
                          f"{tuple(s_logits.shape[1:])}; teacher and student need the same tokenizer")
    return task, s_logits, t_logits, targets != -100


def token_batch(meta: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    """n random windows of token ids (n, block_size)."""
    return torch.randint(0, meta["vocab_size"], (n, meta["block_size"]), generator=generator)


def export_lm(*args, **kw):
    """ONNX export with a KV cache (`r1.models.lm.export`, imported on first use)."""
    from r1.models.lm.export import export_lm as run
    return run(*args, **kw)


def load_predictor(path, runtime: str | None = None, threads: int = 1):
    """The family's predictor for `runtime`: torch, or onnxruntime (onnx, onnx-int8) over its own graph."""
    from r1.inference.runtimes import infer_runtime

    if (runtime or infer_runtime(path)) in ("onnx", "onnx-int8"):
        from r1.models.lm.onnx_predictor import OnnxTextPredictor
        return OnnxTextPredictor.load(path, runtime, threads)
    from r1.models.lm.predictor import TextPredictor
    return TextPredictor.load(path, runtime, threads)


SPEC = register_family(FamilySpec(
    name="lm", summary="language modelling: text in, generated text out",
    evaluate="r1.models.lm.evaluate:evaluate_lm", monitor="loss", mode="min", tolerance=0.02,
    inputs="text", predictor=load_predictor, runtimes=("torch", "onnx", "onnx-int8"),
    export=ExportHook(run=export_lm, options={"int8": False}),
    kd=lm_kd, example_inputs=token_batch, primary_loss="lm", bench="r1.models.lm.bench:bench_generation",
    schema="r1.models.lm.schema:Generation", headline=("loss", "ppl")))
