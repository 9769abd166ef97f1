"""INT8 quantization through onnxruntime.

* static: QDQ graph, per-channel int8 weights, uint8 activations whose ranges are calibrated on
  training batches; the first conv and the last linear layer can stay in float. `reduce_range`
  (7-bit weights) avoids the int16 saturation of u8 x s8 products on CPUs without VNNI (AVX2):
  on the digits student it took int8 accuracy from 0.9556 to 0.9741 (= fp32). This is what conv
  nets need: PyTorch's eager `quantize_dynamic` only touches `nn.Linear`.
* dynamic: int8 weights of MatMul/Gemm with activations quantized on the fly (Linear-heavy models).

The output is an .onnx file carrying the source's R1 metadata, loadable by `r1.inference.load_any`.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from r1.errors import ConfigError

log = logging.getLogger("r1.compress")


class _Calibration:
    """onnxruntime CalibrationDataReader over the first `batches` training batches (no augmentation)."""

    def __init__(self, input_name: str, data_cfg: dict, batches: int, batch_size: int = 32):
        from torch.utils.data import DataLoader

        from r1.config import DataConfig, from_dict
        from r1.data import build_data

        plain = {k: v for k, v in (("augment", False), ("group", 1)) if k in data_cfg}  # no augmentation, one
        cfg = from_dict(DataConfig, {**data_cfg, **plain}, "data")  # sample per item (the graph's contract)
        bundle = build_data(cfg, seed=0)
        loader = DataLoader(bundle.train, batch_size=batch_size, shuffle=False, collate_fn=bundle.collate)
        self.batches = []
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            if batch is not None:
                self.batches.append(_feeds(batch[0], input_name))
        self._it = iter(self.batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.batches)


def _feeds(x, input_name: str) -> dict[str, np.ndarray]:
    """A batch's inputs -> session feeds: a tensor feeds `input_name`; a dict of tensors (a model with
    several graph inputs, e.g. images + tokens + mask) feeds the inputs of the same names."""
    if isinstance(x, dict):
        return {k: v.numpy().astype(np.float32) if v.is_floating_point() else v.numpy() for k, v in x.items()}
    return {input_name: x.numpy().astype(np.float32)}


def _float_nodes(path: Path, keep_float: list[str]) -> list[str]:
    """Names of the first Conv and the last Gemm/MatMul/Conv nodes, as asked by `keep_float`."""
    import onnx

    bad = set(keep_float) - {"first", "last"}
    if bad:
        raise ConfigError(f"quantize.keep_float: {sorted(bad)} not allowed; allowed: first, last")
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    names = []
    if nodes and "first" in keep_float:
        names.append(nodes[0].name)
    if nodes and "last" in keep_float:
        names.append(nodes[-1].name)
    return names


# Only the weight-heavy ops: quantizing hard-swish / SE multiplies too cost 1.5 points on the digits student.
QUANT_OPS = ["Conv", "Gemm", "MatMul"]


def quantize_onnx(fp32: Path, out: Path, method: str, data_cfg: dict | None = None, calib_batches: int = 8,
                  keep_float: list[str] | None = None, per_channel: bool = True, reduce_range: bool = True,
                  all_ops: bool = False) -> Path:
    """One int8 graph: `all_ops` quantizes every op onnxruntime can run in int8, else only QUANT_OPS."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from r1.onnx.compact import compact_onnx
    from r1.onnx.graph import ort_session, read_onnx_meta

    props = read_onnx_meta(fp32)
    prepared = out.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    if method == "dynamic":
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
    elif method == "static":
        if not data_cfg:
            raise ConfigError("static quantization needs calibration data: the model has no data config")
        input_name = ort_session(fp32).get_inputs()[0].name
        excluded = _float_nodes(prepared, keep_float or [])
        quantize_static(str(prepared), str(out), _Calibration(input_name, data_cfg, calib_batches),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, nodes_to_exclude=excluded,
                        op_types_to_quantize=None if all_ops else QUANT_OPS, reduce_range=reduce_range)
        log.info("static int8: %s, kept in float: %s", out, excluded or "none")
    else:
        raise ConfigError(f"quantize.method: {method!r} is not allowed; allowed: static, dynamic")
    prepared.unlink(missing_ok=True)
    compact_onnx(out, {**props, "r1.quantized": json.dumps({"method": method, "per_channel": per_channel,
                                                             "keep_float": keep_float or [],
                                                             "reduce_range": reduce_range,
                                                             "ops": "all" if all_ops else "weights"})})
    return out


OPS = ("weights", "all", "auto")


def quantize_artifact(source: str | Path, out_dir: Path, method: str = "static", calib_batches: int = 8,
                      keep_float: list[str] | None = None, per_channel: bool = True, reduce_range: bool = True,
                      ops: str = "weights", tolerance: float = 0.01) -> Path:
    """Run dir / .safetensors / fp32 .onnx -> `out_dir/model.onnx` (int8). Static `ops`: weights
    (Conv/Gemm/MatMul), all (every op onnxruntime runs in int8) or auto (both, first conv float or
    not, the fastest within `tolerance` of float on val kept: r1/compress/int8_choice.py)."""
    if ops not in OPS:
        raise ConfigError(f"quantize.ops: {ops!r} is not allowed; allowed: {', '.join(OPS)}")
    from r1.artifacts import read_info
    from r1.onnx.export import export_onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(source)
    if source.suffix == ".onnx":
        fp32 = out_dir / "fp32.onnx"
        shutil.copy2(source, fp32)
        info_path = source.with_name("model.json")
        data_cfg = json.loads(info_path.read_text()).get("data", {}) if info_path.is_file() else {}
        if not data_cfg:  # the data config the export stored in the graph
            from r1.onnx.graph import read_onnx_meta
            data_cfg = json.loads(read_onnx_meta(source).get("r1.data") or "{}")
    else:
        fp32 = out_dir / "fp32.onnx"
        export_onnx(source, fp32)
        data_cfg = read_info(source).get("data", {})
    with torch.no_grad():
        if method == "static" and ops == "auto":
            from r1.compress.int8_choice import choose_int8
            from r1.onnx.graph import ort_session

            names = [i.name for i in ort_session(fp32).get_inputs()]
            if len(names) != 1:
                raise ConfigError(f"quantize.ops: auto times graphs with one image input; this one has inputs "
                                  f"{names}; allowed here: weights, all")

            def one(path: Path, all_ops: bool, keep: list[str]) -> Path:
                return quantize_onnx(fp32, path, method, data_cfg, calib_batches, keep, per_channel, reduce_range,
                                     all_ops)

            choose_int8(fp32, out_dir / "model.onnx", one, data_cfg, keep_float or [], tolerance)
            return out_dir / "model.onnx"
        return quantize_onnx(fp32, out_dir / "model.onnx", method, data_cfg, calib_batches, keep_float, per_channel,
                             reduce_range, ops == "all")
