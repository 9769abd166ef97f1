"""A Triton Inference Server model repository around an exported ONNX model.

    REPO/<name>/config.pbtxt     ModelConfig (protobuf text format), read by tritonserver
    REPO/<name>/1/model.onnx     the ONNX file (version 1), R1 metadata kept
    REPO/<name>/labels.txt       one class name per line (when the model has classes)

Inputs and outputs (names, data types, dims) are read from the ONNX graph itself. With
`max_batch_size > 0` Triton batches along a first dimension it does not list, so every graph
input and output must have a dynamic first (batch) dimension, which is left out of `dims`; a
per-sample scalar (graph shape `[batch]`) is written as `dims: [1]` with `reshape: {shape: []}`,
the form Triton documents for it. Other dynamic dimensions are `-1`. The labels file is attached
(`label_filename`, Triton's classification extension) to each output holding one score per class.

Serve it with `tritonserver --model-repository REPO` (its onnxruntime backend), query it with
`perf_analyzer -m <name> --concurrency-range 1:8`.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from r1.errors import ConfigError

# onnx.TensorProto.DataType -> Triton DataType (model_config.proto)
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
                  6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
                  11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}
LABELS = "labels.txt"
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass
class TritonSettings:
    name: str = ""  # model name in the repository; empty: from the run / file name
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_us: int = 500
    instance_kind: str = "cpu"  # cpu | gpu
    instance_count: int = 1

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"export.triton_max_batch: {self.max_batch_size} must be >= 1")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ConfigError(f"export.triton_preferred_batch: {bad} outside 1..{self.max_batch_size} "
                              "(export.triton_max_batch)")
        if self.instance_kind not in KINDS:
            raise ConfigError(f"export.triton_instance: {self.instance_kind!r} is not allowed; allowed: cpu, gpu")
        if self.name and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ConfigError(f"export.triton_name: {self.name!r} may hold only letters, digits, '_', '.', '-'")


@dataclass
class TensorSpec:
    name: str
    data_type: str
    dims: list[int]  # without the batch dimension
    scalar: bool = False  # graph shape [batch]: dims [1] reshaped to []


def model_name(source: Path) -> str:
    """A repository-safe name from a run dir (its folder) or a file (its parent folder, else stem)."""
    base = source.name if source.is_dir() else (source.parent.name or source.stem)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "model"
    return name


def graph_tensors(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, str]]:
    """(inputs, outputs, metadata_props) of an ONNX file, batch dimension removed."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [_spec(v, onnx_path) for v in proto.graph.input if v.name not in initializers]
    outputs = [_spec(v, onnx_path) for v in proto.graph.output]
    return inputs, outputs, {p.key: p.value for p in proto.metadata_props}


def _spec(value, onnx_path: Path) -> TensorSpec:
    tensor = value.type.tensor_type
    if tensor.elem_type not in ONNX_TO_TRITON:
        raise ConfigError(f"{onnx_path}: tensor {value.name!r} has ONNX element type {tensor.elem_type}, "
                          f"which Triton cannot take; allowed: {sorted(ONNX_TO_TRITON)}")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    if not dims or dims[0] != -1:
        raise ConfigError(f"{onnx_path}: tensor {value.name!r} has shape {dims}, no dynamic batch dimension "
                          "first; export with export.dynamic_batch=true for a Triton repository")
    rest = dims[1:]
    return TensorSpec(value.name, ONNX_TO_TRITON[tensor.elem_type], rest or [1], scalar=not rest)


def render_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], settings: TritonSettings,
                  label_outputs: set[str] = frozenset()) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig)."""
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', 'default_model_filename: "model.onnx"',
             f"max_batch_size: {settings.max_batch_size}"]
    for key, specs in (("input", inputs), ("output", outputs)):
        lines.append(f"{key} [")
        blocks = []
        for s in specs:
            body = [f'    name: "{s.name}"', f"    data_type: {s.data_type}", f"    dims: {s.dims}"]
            if s.scalar:
                body.append("    reshape: { shape: [] }")
            if s.name in label_outputs:
                body.append(f'    label_filename: "{LABELS}"')
            blocks.append("  {\n" + "\n".join(body) + "\n  }")
        lines.append(",\n".join(blocks))
        lines.append("]")
    preferred = sorted(set(settings.preferred_batch_sizes))
    lines += ["dynamic_batching {", f"  preferred_batch_size: {preferred}",
              f"  max_queue_delay_microseconds: {settings.max_queue_delay_us}", "}",
              "instance_group [", f"  {{ count: {settings.instance_count} kind: {KINDS[settings.instance_kind]} }}", "]"]
    return "\n".join(lines) + "\n"


def config_dict(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], settings: TritonSettings,
                label_outputs: set[str] = frozenset()) -> dict:
    """The ModelConfig of `render_config` as the JSON Triton's `GET /v2/models/{name}/config` answers
    (protobuf field names, unset fields left out, numbers as numbers)."""
    def tensor(s: TensorSpec) -> dict:
        entry = {"name": s.name, "data_type": s.data_type, "dims": list(s.dims)}
        if s.scalar:
            entry["reshape"] = {}  # shape [] (an empty repeated field: nothing to print)
        if s.name in label_outputs:
            entry["label_filename"] = LABELS
        return entry

    return {"name": name, "platform": "onnxruntime_onnx", "default_model_filename": "model.onnx",
            "max_batch_size": settings.max_batch_size, "input": [tensor(s) for s in inputs],
            "output": [tensor(s) for s in outputs],
            "dynamic_batching": {"preferred_batch_size": sorted(set(settings.preferred_batch_sizes)),
                                 "max_queue_delay_microseconds": settings.max_queue_delay_us},
            "instance_group": [{"count": settings.instance_count, "kind": KINDS[settings.instance_kind]}]}


def _classes_and_labels(outputs: list[TensorSpec], meta: dict) -> tuple[list, set[str]]:
    """(class names, the outputs holding one score per class: Triton's classification labels)."""
    classes = json.loads(meta.get("r1.classes", "[]") or "[]")
    if not classes:
        return [], set()
    return classes, {o.name for o in outputs if o.dims == [len(classes)] and o.data_type.startswith("TYPE_FP")}


def repository_config(onnx_path: Path, name: str, settings: TritonSettings) -> dict:
    """`config_dict` of the repository `write_repository` lays out around `onnx_path` (what `r1 serve`
    answers at /v2/models/{name}/config)."""
    settings.validate()
    inputs, outputs, meta = graph_tensors(onnx_path)
    return config_dict(name, inputs, outputs, settings, _classes_and_labels(outputs, meta)[1])


def model_config_proto():
    """Triton's own `ModelConfig` message class, from the `tritonclient` package (its
    grpc/model_config_pb2.py, loaded alone: no grpc needed); None when tritonclient is absent."""
    import importlib.util

    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        return None
    import sys

    module = sys.modules.get("tritonclient.grpc.model_config_pb2")
    if module is None:
        loader_spec = importlib.util.spec_from_file_location("r1_triton_model_config_pb2", path)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
        sys.modules["tritonclient.grpc.model_config_pb2"] = module
    return module.ModelConfig


def parse_config(text: str):
    """config.pbtxt text -> Triton's ModelConfig message (raises ConfigError when it does not parse);
    None when tritonclient is not installed."""
    cls = model_config_proto()
    if cls is None:
        return None
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, cls())
    except text_format.ParseError as err:
        raise ConfigError(f"config.pbtxt does not parse as Triton's ModelConfig: {err}") from None


def write_repository(onnx_path: Path, repo: Path, settings: TritonSettings, source: Path | None = None) -> dict:
    """Lay out `repo/<name>/` around the exported `onnx_path` (moved into `<name>/1/model.onnx`
    when it is not there already). Returns a report: paths, inputs, outputs."""
    settings.validate()
    name = settings.name or model_name(source or onnx_path)
    inputs, outputs, meta = graph_tensors(onnx_path)
    model_dir = repo / name
    target = model_dir / "1" / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    if onnx_path.resolve() != target.resolve():
        shutil.copyfile(onnx_path, target)
    classes, label_outputs = _classes_and_labels(outputs, meta)
    if classes:
        (model_dir / LABELS).write_text("".join(f"{c}\n" for c in classes))
    config = render_config(name, inputs, outputs, settings, label_outputs)
    checked = parse_config(config) is not None  # with tritonclient installed: Triton's own schema
    (model_dir / "config.pbtxt").write_text(config)
    return {"repository": str(repo), "model": name, "config": str(model_dir / "config.pbtxt"), "onnx": str(target),
            "labels": str(model_dir / LABELS) if classes else None,
            "inputs": {s.name: [s.data_type, s.dims] for s in inputs},
            "outputs": {s.name: [s.data_type, s.dims] for s in outputs},
            "checked_with_triton_proto": checked, "serve": f"tritonserver --model-repository {repo}",
            "perf": f"perf_analyzer -m {name} -b 1 --concurrency-range 1:8"}
