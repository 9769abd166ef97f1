"""ONNX export of the language models (R1-LM, GPT) with a KV cache, and its dynamic int8 variant.

One graph serves the prompt and every later step: inputs `idx` (B, T) int64 and, per layer i,
`past_{i}_k` / `past_{i}_v` (B, n_kv, P, hs) float32 (P = 0 for the prompt); outputs `logits`
(B, T, V) of every new position and `present_{i}_k` / `present_{i}_v` (B, n_kv, P + T, hs). Batch,
T and P are dynamic; P + T must stay within the model's block_size (generation rebuilds the cache
from the last 3/4 of the window when it fills, as the torch path does).

The graph is a step function written here over the torch model's own weights, not a trace of its
Python forward: that forward branches on the cache position, the window and early exit, and keeps
the cache in a Python object. Here attention is one scores matmul with two masks (full causal,
sliding window) computed from positions, RoPE is a real-valued rotation (ONNX has no complex
type), grouped-query heads are a reshape. The graph runs all layers: early exit is torch-only.

Exporter: torch.onnx.export with dynamo=True (torch.export, the default since torch 2.9; the
TorchScript exporter is deprecated). With Dims for batch, T and P it gives one graph whose shapes
are symbolic, constant-folded by onnxscript's optimiser (transposed weights are initializers).
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from r1.errors import ConfigError, R1Error

log = logging.getLogger(__name__)
IDX = "idx"
INT8_SUFFIX = "-int8"
# dynamic int8 settings, chosen by measurement (benchmarks/lm_onnx.py): see quantize_lm
INT8_DEFAULTS = {"method": "dynamic", "per_channel": True, "reduce_range": False, "weight_type": "qint8"}


def past_names(n_layer: int) -> list[str]:
    return [f"past_{i}_{kv}" for i in range(n_layer) for kv in ("k", "v")]


def present_names(n_layer: int) -> list[str]:
    return [f"present_{i}_{kv}" for i in range(n_layer) for kv in ("k", "v")]


def _attention(q, k, v, masks, scale):
    """q (B, nh, T, hs) against k, v (B, n_kv, L, hs): one scores matmul, one softmax per bool mask
    (T, L) -> one output (B, nh, T, hs) per mask. Query head h reads key/value head h // (nh / n_kv)."""
    B, nh, T, hs = q.shape
    n_kv, L = k.shape[1], k.shape[2]
    g = nh // n_kv
    scores = torch.matmul(q.reshape(B, n_kv, g * T, hs), k.transpose(-1, -2)) * scale  # (B, n_kv, gT, L)
    scores = scores.reshape(B, n_kv, g, T, L)
    outs = []
    for m in masks:
        p = torch.softmax(scores.masked_fill(~m, float("-inf")), dim=-1).reshape(B, n_kv, g * T, L)
        outs.append(torch.matmul(p, v).reshape(B, nh, T, hs))
    return outs


def _positions(past_len, t, device):
    """Query positions (T,) and key positions (L,) of T new tokens after `past_len` cached ones."""
    qpos = torch.arange(t, device=device) + past_len
    kpos = torch.arange(t + past_len, device=device)
    return qpos, kpos


class _StepBase(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.n_layer = len(model.blocks)

    def forward(self, idx, *past):
        return self.step(idx, list(past))

    @staticmethod
    def _frame(idx, past):
        """(B, T, query positions (T,), key positions (L,), causal mask (T, L)) of new tokens `idx` after `past`."""
        B, T = idx.shape
        qpos, kpos = _positions(past[0].shape[2], T, idx.device)
        return B, T, qpos, kpos, kpos[None, :] <= qpos[:, None]


class GPTStep(_StepBase):
    """The GPT baseline as a step function over a KV cache (see the module doc)."""

    def step(self, idx, past):
        m = self.model
        B, T, qpos, kpos, causal = self._frame(idx, past)
        x = m.tok_emb(idx) + m.pos_emb(qpos)
        present = []
        for i, block in enumerate(m.blocks):
            a = block.attn
            h = block.ln1(x)
            C = h.shape[-1]
            q, k, v = a.qkv(h).view(B, T, 3, a.n_head, C // a.n_head).permute(2, 0, 3, 1, 4)
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            present += [k, v]
            (y,) = _attention(q, k, v, [causal], (C // a.n_head) ** -0.5)
            x = x + a.proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + block.mlp(block.ln2(x))
        return (m.head(m.ln_f(x)), *present)


class R1LMStep(_StepBase):
    """R1-LM (gated global + local attention, fusion, RoPE, grouped-query heads) as a step function."""

    def __init__(self, model):
        super().__init__(model)
        cfg = model.cfg
        hs = cfg.n_embd // cfg.n_head
        if model.rotary is not None:
            cis = model.rotary.cis(0, model.block_size)  # (block_size, hs/2) complex
            self.register_buffer("cos", cis.real.contiguous(), persistent=False)
            self.register_buffer("sin", cis.imag.contiguous(), persistent=False)
        self.hs = hs

    def _rotate(self, x, cos, sin):
        """x (B, T, H, hs) rotated in adjacent pairs by cos/sin (T, 1, hs/2), as apply_rotary does."""
        pairs = x.unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)

    def step(self, idx, past):
        m = self.model
        B, T, qpos, kpos, causal = self._frame(idx, past)
        local = causal & (kpos[None, :] > qpos[:, None] - m.cfg.window)
        x = m.tok_emb(idx)
        if m.pos_emb is not None:
            x = x + m.pos_emb(qpos)
        cos = sin = None
        if m.rotary is not None:
            cos, sin = self.cos[qpos][:, None], self.sin[qpos][:, None]  # (T, 1, hs/2)
        prev, cur = None, x
        present = []
        for j, block in enumerate(m.blocks, 1):
            u = m.fuse[j - 3](cur, prev) if (len(m.fuse) and j >= 3) else cur
            a = block.attn
            h = block.norm1(u)
            C = h.shape[-1]
            qk, v, gate = a.qkv(h).split([C + a.kv_dim, a.kv_dim, a.n_head], dim=-1)
            if cos is not None:
                qk = self._rotate(qk.reshape(B, T, a.n_head + a.n_kv, self.hs), cos, sin).reshape(B, T, C + a.kv_dim)
            q, k = qk.split([C, a.kv_dim], dim=-1)
            q = q.reshape(B, T, a.n_head, self.hs).transpose(1, 2)
            k = k.reshape(B, T, a.n_kv, self.hs).transpose(1, 2)
            v = v.reshape(B, T, a.n_kv, self.hs).transpose(1, 2)
            k = torch.cat([past[2 * (j - 1)], k], dim=2)
            v = torch.cat([past[2 * (j - 1) + 1], v], dim=2)
            present += [k, v]
            glob, loc = _attention(q, k, v, [causal, local], self.hs ** -0.5)
            g = torch.sigmoid(gate).transpose(1, 2).unsqueeze(-1)  # (B, nh, T, 1)
            y = loc + g * (glob - loc)
            h = u + a.proj(y.transpose(1, 2).reshape(B, T, C))
            h = h + block.mlp(block.norm2(h))
            prev, cur = cur, h
        return (m.head(m.norm_f(cur)), *present)


def step_module(model) -> _StepBase:
    """The export step function of a language model (R1-LM or GPT)."""
    cfg = getattr(model, "cfg", None)
    if getattr(cfg, "objective", "") == "mlm":
        raise ConfigError("export: a masked-LM model (objective: mlm) does not generate; "
                          "ONNX export covers causal language models")
    if hasattr(model, "exit_set"):
        return R1LMStep(model).eval()
    if hasattr(model, "ln_f"):
        return GPTStep(model).eval()
    raise ConfigError(f"export: no ONNX step function for {type(model).__name__}; known: R1LM, GPT")


def kv_shape(model) -> tuple[int, int]:
    """(key/value heads, head size) of the model's cache."""
    cfg = model.cfg
    return getattr(model.blocks[0].attn, "n_kv", cfg.n_head), cfg.n_embd // cfg.n_head


def empty_past(n_layer: int, batch: int, n_kv: int, hs: int) -> list[np.ndarray]:
    return [np.zeros((batch, n_kv, 0, hs), np.float32) for _ in range(2 * n_layer)]


def export_lm(model, out: str | Path, *, opset: int | None = None, verify: bool = True, atol: float = 1e-4,
              options: dict | None = None, meta: dict | None = None, metadata=None, **_ignored) -> dict:
    """Export a language model to `out` (one KV-cache step graph, module doc); `options["int8"]`
    quantizes the Linear layers afterwards (dynamic int8, `quantize_lm`). `metadata(model, meta,
    example)` -> the generic R1 metadata_props. Returns a report dict."""
    from r1.onnx.compact import compact_onnx

    options = options or {}
    step = step_module(model.eval())
    n_kv, hs = kv_shape(model)
    L = step.n_layer
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    V = model.head.weight.shape[0]
    T0, P0, B0 = 3, 4, 2  # >= 2 each: torch.export specialises sizes 0 and 1
    idx = torch.randint(0, V, (B0, T0), generator=gen)
    past = [torch.randn(B0, n_kv, P0, hs, generator=gen) for _ in range(2 * L)]
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=model.block_size)
    plen = torch.export.Dim("past", min=0, max=model.block_size)
    dyn = ({0: batch, 1: seq},) + tuple({0: batch, 2: plen} for _ in range(2 * L))
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(step, (idx, *past), str(out), input_names=[IDX, *past_names(L)],
                          output_names=["logits", *present_names(L)], dynamic_shapes=(dyn[0], dyn[1:]),
                          opset_version=opset, external_data=False, verbose=False, dynamo=True)
    seconds = time.perf_counter() - t0
    props = metadata(model, meta, idx) if metadata is not None else {}
    props.update(lm_meta(model, n_kv, hs))
    props["r1.input"] = json.dumps({"name": IDX, "layout": "BT", "dtype": "int64", "shape": [-1, -1]})
    compact_onnx(out, props)
    report = {"path": str(out), "family": "lm", "export_seconds": round(seconds, 2), "dynamic_batch": True,
              "outputs": ["logits", "present_*"], "layers": L, "kv_heads": n_kv, "head_size": hs}
    if verify:
        report.update(verify_lm(step, out, V, n_kv, hs, atol))
    if options.get("int8"):
        fp32 = out.with_name(out.stem + "-fp32.onnx")
        out.replace(fp32)
        report["int8"] = quantize_lm(fp32, out)
        fp32.unlink()
    return report


def lm_meta(model, n_kv: int, hs: int) -> dict:
    return {"r1.lm": json.dumps({"n_layer": len(model.blocks), "kv_heads": n_kv, "head_size": hs,
                                 "block_size": int(model.block_size), "vocab_size": int(model.head.weight.shape[0]),
                                 "early_exit": False})}


@torch.no_grad()
def verify_lm(step, path: Path, V: int, n_kv: int, hs: int, atol: float) -> dict:
    """onnxruntime against the torch step function: a prompt (past 0) then two one-token steps, at batch 3."""
    from r1.onnx.graph import ort_session

    sess = ort_session(path)
    gen = torch.Generator().manual_seed(1)
    L = step.n_layer
    past = [torch.zeros(3, n_kv, 0, hs) for _ in range(2 * L)]
    worst = 0.0
    for t in (5, 1, 1):
        idx = torch.randint(0, V, (3, t), generator=gen)
        ref = step(idx, *past)
        got = sess.run(None, {IDX: idx.numpy(), **{n: p.numpy() for n, p in zip(past_names(L), past)}})
        worst = max(worst, *(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref, got)))
        past = list(ref[1:])
    if not worst <= atol:
        raise R1Error(f"{path}: onnxruntime differs from torch (max abs diff {worst:.3g} > {atol:g})")
    return {"verify_batch": 3, "max_abs_diff": worst}


def quantize_lm(src: str | Path, out: str | Path, method: str | None = None, per_channel: bool | None = None,
                reduce_range: bool | None = None, weight_type: str | None = None) -> dict:
    """int8 of the graph's MatMuls with constant weights (the Linear layers and the tied LM head).
    method `dynamic`: onnxruntime.quantization.quantize_dynamic (int8 weights, activations quantized per
    call: MatMulInteger, fused by onnxruntime into DynamicQuantizeMatMul); `nbits`: MatMulNBits with
    8-bit blockwise weights and int8 compute (accuracy_level 4). Metadata is kept; `r1.quant` records
    the settings."""
    import onnx

    s = {"method": method or INT8_DEFAULTS["method"],
         "per_channel": INT8_DEFAULTS["per_channel"] if per_channel is None else per_channel,
         "reduce_range": INT8_DEFAULTS["reduce_range"] if reduce_range is None else reduce_range,
         "weight_type": weight_type or INT8_DEFAULTS["weight_type"]}
    if s["method"] not in ("dynamic", "nbits"):
        raise ConfigError(f"int8 method: {s['method']!r} is not allowed; allowed: dynamic, nbits")
    if s["weight_type"] not in ("qint8", "quint8"):
        raise ConfigError(f"weight_type: {s['weight_type']!r} is not allowed; allowed: qint8, quint8")
    src, out = Path(src), Path(out)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        q = Path(tmp) / "q.onnx"
        if s["method"] == "dynamic":
            _quantize_dynamic(src, q, s)
        else:
            _quantize_nbits(src, q)
            s = {"method": "nbits", "bits": 8, "block_size": 32, "accuracy_level": 4}
        proto = onnx.load(str(q))
        props = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
        props["r1.quant"] = json.dumps({"kind": "int8", **s})
        del proto.metadata_props[:]
        for k, v in props.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, str(q))
        q.replace(out)
    n = sum(1 for node in onnx.load(str(out)).graph.node if node.op_type in ("MatMulInteger", "MatMulNBits"))
    return {"path": str(out), "quantized_matmuls": n, "seconds": round(time.perf_counter() - t0, 2), **s}


def _quantize_dynamic(src: Path, out: Path, s: dict) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
    quantize_dynamic(str(src), str(out), per_channel=s["per_channel"], reduce_range=s["reduce_range"],
                     weight_type=types[s["weight_type"]], op_types_to_quantize=["MatMul", "Gemm"],
                     extra_options={"MatMulConstBOnly": True})


def _quantize_nbits(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=8)
    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4,
                             algo_config=cfg)
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=False)
