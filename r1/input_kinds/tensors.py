"""Open Inference Protocol (v2) tensors on the input kinds' side: what a kind's v2 inputs look like,
its request parameters, and a record -> output tensors mapping every kind shares.

A record (the family's JSON dict) becomes named tensors with a leading batch dimension, one row per
input of the request. The family's record schema (`FamilySpec.schema`, a pydantic model) names them
and gives their datatypes, so a kind knows no family:

    str / Literal  -> BYTES            int   -> INT64          float -> FP32        bool -> BOOL
    list[X]        -> one more dimension (fixed where the schema fixes the length, else -1)
    list[Model]    -> one tensor per field of Model, named `<list>_<field>` (cls `top_label`, ...)

Lists of different lengths in one request are padded to the longest (0, 0.0, "" or false), and a
record with lists gets an INT32 `count` tensor: the length of its first list (a record's lists are
parallel in every R1 family: det's boxes, scores, class_ids and labels). Kinds may rename tensors
(`InputKind.v2_renames`; the text kind calls `text` `text_output`, as Triton's generate extension).
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass

from r1.input_kinds.http import ApiError

# v2 datatype -> numpy dtype string (BYTES: numpy object arrays of `bytes`)
DTYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
          "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
          "FP32": "float32", "FP64": "float64", "BYTES": "object"}
PAD = {"BYTES": b"", "BOOL": False}


@dataclass(frozen=True)
class Leaf:
    """One output tensor: the record path it reads, its v2 datatype and its dims below the batch."""

    path: tuple[str, ...]
    datatype: str
    dims: tuple[int, ...]

    def name(self, renames: dict[str, str]) -> str:
        key = "_".join(self.path)
        return renames.get(key, key)


def tensor_meta(name: str, datatype: str, shape: list[int]) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape)}


# ---------------------------------------------------------------------------------------- schema -> leaves
def _unwrap(tp):
    """-> (type without Optional / Annotated, fixed length from Annotated metadata or None)."""
    fixed = None
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            args = typing.get_args(tp)
            for m in args[1:]:
                for item in [m, *getattr(m, "metadata", [])]:
                    lo, hi = getattr(item, "min_length", None), getattr(item, "max_length", None)
                    if lo is not None and lo == hi:
                        fixed = lo
            tp = args[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0]
        else:
            return tp, fixed


def _datatype(tp) -> str | None:
    if typing.get_origin(tp) is typing.Literal or tp is str:
        return "BYTES"
    return {bool: "BOOL", int: "INT64", float: "FP32"}.get(tp)


def _leaves(model, path: tuple[str, ...] = (), dims: tuple[int, ...] = ()) -> list[Leaf]:
    out = []
    for name, field in model.model_fields.items():
        out += _field_leaves(field.annotation, path + (name,), dims, field.metadata)
    return out


def _field_leaves(tp, path, dims, metadata=()) -> list[Leaf]:
    tp, fixed = _unwrap(tp)
    for m in metadata:
        if getattr(m, "min_length", None) is not None and m.min_length == getattr(m, "max_length", None):
            fixed = m.min_length
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (str,)
        return _field_leaves(item, path, dims + (fixed if fixed is not None else -1,))
    if isinstance(tp, type) and hasattr(tp, "model_fields"):
        return _leaves(tp, path, dims)
    datatype = _datatype(tp)
    return [Leaf(path, datatype, dims)] if datatype else []


def _value_leaves(value, path=(), dims=()) -> list[Leaf]:
    """Leaves read from a record's values (a family without a schema)."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _value_leaves(v, path + (k,), dims)]
    if isinstance(value, list):
        return _value_leaves(value[0] if value else 0.0, path, dims + (-1,))
    datatype = "BYTES" if isinstance(value, str) else _datatype(type(value))
    return [Leaf(path, datatype, dims)] if datatype else []


def record_leaves(schema, sample: dict | None = None) -> list[Leaf]:
    """The output tensors of a record schema (or, without one, of a sample record; none without either)."""
    if schema is not None:
        return _leaves(schema)
    return _value_leaves(sample) if sample else []


def _has_lists(leaves: list[Leaf]) -> bool:
    return any(leaf.dims for leaf in leaves)


def outputs_metadata(schema, renames: dict[str, str], sample: dict | None = None) -> list[dict]:
    """Model metadata `outputs` for records of `schema`: name, datatype, shape (batch dimension -1 first)."""
    leaves = record_leaves(schema, sample)
    out = [tensor_meta(leaf.name(renames), leaf.datatype, [-1, *leaf.dims]) for leaf in leaves]
    if _has_lists(leaves):
        out.append(tensor_meta("count", "INT32", [-1]))
    return out


# ---------------------------------------------------------------------------------------- records -> tensors
def _read(value, path: tuple[str, ...]):
    if not path:
        return value
    if isinstance(value, list):
        return [_read(v, path) for v in value]
    return _read(value.get(path[0]) if isinstance(value, dict) else None, path[1:])


def _extent(value, depth: int, sizes: list[int]) -> None:
    if depth == len(sizes):
        return
    if isinstance(value, list):
        sizes[depth] = max(sizes[depth], len(value))
        for v in value:
            _extent(v, depth + 1, sizes)


def _fill(arr, index: tuple, value, datatype: str) -> None:
    if isinstance(value, list):
        for i, v in enumerate(value):
            _fill(arr, index + (i,), v, datatype)
    elif value is not None:
        arr[index] = value.encode() if datatype == "BYTES" and isinstance(value, str) else value


def records_to_tensors(records: list[dict], schema, renames: dict[str, str]) -> dict:
    """Records (one per batch row) -> {output name: numpy array (batch first)}; ragged lists padded."""
    import numpy as np

    leaves = record_leaves(schema, records[0] if records else None)
    out = {}
    for leaf in leaves:
        values = [_read(r, leaf.path) for r in records]
        sizes = [0] * len(leaf.dims)
        for v in values:
            _extent(v, 0, sizes)
        shape = (len(records), *[max(s, d) if d != -1 else s for s, d in zip(sizes, leaf.dims)])
        arr = np.full(shape, PAD.get(leaf.datatype, 0), dtype=DTYPES[leaf.datatype])
        for i, v in enumerate(values):
            _fill(arr, (i,), v, leaf.datatype)
        out[leaf.name(renames)] = arr
    if _has_lists(leaves):
        first = next(leaf.path[0] for leaf in leaves if leaf.dims)
        out["count"] = np.array([len(r.get(first) or []) for r in records], dtype=np.int32)
    return out


# ---------------------------------------------------------------------------------------- reading inputs
def rows(tensors: dict, name: str) -> list:
    """The rows of input `name` (its batch dimension first) as a list."""
    return list(tensors[name])


def text_rows(tensors: dict, name: str, max_chars: int) -> list[str]:
    """A BYTES input of one string per row (shape [N] or [N, 1]) -> the strings (UTF-8)."""
    arr = tensors[name]
    if arr.ndim != 1:
        raise ApiError(400, "bad_shape", f"input {name}: shape {list(arr.shape)}; expected [N] or [N, 1], one "
                                         f"string per row")
    out = []
    for item in arr:
        try:
            text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError:
            raise ApiError(400, "bad_text", f"input {name}: not UTF-8 text") from None
        if len(text) > max_chars:
            raise ApiError(413, "text_too_long", f"input {name}: {len(text)} characters; at most {max_chars}")
        out.append(text)
    return out


def int_param(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(400, "bad_parameter", f"parameter {name}: {value!r}; expected an integer in {lo}..{hi}")
    return value
