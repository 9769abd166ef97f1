"""Open Inference Protocol (v2) bodies: inference requests in, responses out, JSON and binary tensors.

    req = parse_infer(body, request.headers.get("inference-header-content-length"))
    req.inputs       {name: numpy array}  (BYTES: object arrays of bytes)
    body, headers = encode_infer(head, tensors, req.binary_outputs(names))

Binary tensor data (the `binary_data` extension): the JSON header comes first, its length in the
`Inference-Header-Content-Length` header; each binary input names its byte count in
`parameters.binary_data_size`, and their bytes follow in input order (BYTES: each element a 4-byte
little-endian length, then its bytes). Every way a body can disagree with itself (a header length
past the body, a shape whose element count is not the data's, bytes left over or missing, a value
of the wrong type) is a 400 ApiError naming the input: never a 500.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from r1.input_kinds.http import ApiError
from r1.input_kinds.tensors import DTYPES

MAX_RANK = 8
# request parameters Triton's clients may send that concern the server, not the model
RESERVED = {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}


def bad(detail: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, detail)


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[dict] | None  # requested outputs ({"name", "parameters"}); None: all
    parameters: dict = field(default_factory=dict)  # the model's (reserved ones removed)
    binary_default: bool = False  # parameters.binary_data_output

    def binary_outputs(self, names: list[str]) -> dict[str, bool]:
        """Output name -> sent as binary data, for the outputs to send (requested, else all)."""
        if self.outputs is None:
            return {n: self.binary_default for n in names}
        return {o["name"]: bool((o.get("parameters") or {}).get("binary_data", self.binary_default))
                for o in self.outputs}


# ------------------------------------------------------------------------------------------- requests
def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """A body sent with `Content-Encoding: gzip | deflate` (tritonclient's request compression),
    inflated to at most `limit` bytes (413 beyond: a small bomb must not fill the memory)."""
    import zlib

    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ApiError(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: send gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise bad(f"the body is not valid {encoding} data ({err})", "bad_encoding") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ApiError(413, "body_too_large", f"the {encoding} body inflates past the limit of {limit} bytes")
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """-> (the JSON header as a dict, the binary part after it)."""
    if header_length is None:
        head, rest = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise bad(f"Inference-Header-Content-Length: {header_length!r} is not a byte count") from None
        if not 0 < n <= len(body):
            raise bad(f"Inference-Header-Content-Length: {n}, but the body holds {len(body)} bytes")
        head, rest = body[:n], body[n:]
    try:
        obj = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        where = " (is Inference-Header-Content-Length right?)" if header_length is not None else ""
        raise bad(f"the request header is not valid JSON{where}: {type(err).__name__}", "malformed_json") from None
    if not isinstance(obj, dict):
        raise bad("the request must be a JSON object {\"inputs\": [...]}")
    return obj, rest


def _shape(name: str, shape) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise bad(f"input {name}: shape {shape!r} is not a list of at most {MAX_RANK} sizes >= 0", "bad_shape")
    return tuple(shape)


def _flatten(data, name: str) -> list:
    out, stack = [], [iter([data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > MAX_RANK + 1:
                    raise bad(f"input {name}: data nested deeper than {MAX_RANK}")
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def json_array(name: str, datatype: str, shape: tuple[int, ...], data) -> np.ndarray:
    values = _flatten(data, name)
    count = math.prod(shape)
    if len(values) != count:
        raise bad(f"input {name}: shape {list(shape)} holds {count} elements, its data has {len(values)}", "bad_shape")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise bad(f"input {name}: BYTES data must be strings", "bad_datatype")
        return np.array([v.encode() for v in values] or [], dtype=object).reshape(shape)
    if datatype == "BOOL":
        ok = all(isinstance(v, bool) for v in values)
    elif datatype.startswith("FP"):
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    else:
        info = np.iinfo(DTYPES[datatype])
        ok = all(isinstance(v, int) and not isinstance(v, bool) and info.min <= v <= info.max for v in values)
    if not ok:
        raise bad(f"input {name}: data holds values that are not {datatype}", "bad_datatype")
    return np.array(values, dtype=DTYPES[datatype]).reshape(shape)


def _bytes_elements(name: str, raw: bytes, count: int) -> np.ndarray:
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise bad(f"input {name}: BYTES data ends inside an element's length prefix", "bad_binary")
        (n,) = struct.unpack_from("<I", raw, at)
        if at + 4 + n > len(raw):
            raise bad(f"input {name}: a BYTES element claims {n} bytes past the end of its data", "bad_binary")
        items.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    if len(items) != count:
        raise bad(f"input {name}: shape holds {count} elements, its binary data {len(items)}", "bad_shape")
    arr = np.empty(count, dtype=object)
    arr[:] = items
    return arr


def _binary_array(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, raw, count).reshape(shape)
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise bad(f"input {name}: shape {list(shape)} of {datatype} is {count * dtype.itemsize} bytes, its binary "
                  f"data {len(raw)}", "bad_shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    head, rest = split_body(body, header_length)
    inputs = head.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad("inputs: a non-empty list of tensors is required", "missing_field")
    arrays, datatypes, at = {}, {}, 0
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise bad(f"inputs[{i}]: expected an object with a name, datatype, shape and data")
        name, datatype = spec["name"], spec.get("datatype")
        if name in arrays:
            raise bad(f"input {name}: given twice")
        if datatype not in DTYPES:
            raise bad(f"input {name}: datatype {datatype!r} is not one of {', '.join(DTYPES)}", "bad_datatype")
        shape = _shape(name, spec.get("shape"))
        params = spec.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or at + size > len(rest):
                raise bad(f"input {name}: binary_data_size {size!r}, but {len(rest) - at} bytes of binary data "
                          f"are left", "bad_binary")
            if "data" in spec:
                raise bad(f"input {name}: both data and binary_data_size")
            arrays[name] = _binary_array(name, datatype, shape, rest[at:at + size])
            at += size
        elif "data" in spec:
            arrays[name] = json_array(name, datatype, shape, spec["data"])
        else:
            raise bad(f"input {name}: no data (JSON `data`, or parameters.binary_data_size with binary data)",
                      "missing_field")
        datatypes[name] = datatype
    if at != len(rest):
        raise bad(f"{len(rest) - at} bytes of binary data after the inputs' (check binary_data_size and "
                  f"Inference-Header-Content-Length)", "bad_binary")
    params = head.get("parameters") or {}
    outputs = head.get("outputs")
    if not isinstance(params, dict) or (outputs is not None and not (
            isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs))):
        raise bad("parameters must be an object, outputs a list of {\"name\": ...}")
    for o in outputs or []:
        oparams = o.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise bad(f"output {o['name']}: parameters must be an object")
        if oparams.get("classification"):
            raise bad(f"output {o['name']}: the classification extension is not supported; read the top_* outputs")
    rid = head.get("id")
    return InferRequest(None if rid is None else str(rid), arrays, datatypes, outputs,
                        {k: v for k, v in params.items() if k not in RESERVED},
                        bool(params.get("binary_data_output", False)))


# ------------------------------------------------------------------------------------------- responses
def _datatype_of(arr: np.ndarray) -> str:
    if arr.dtype == object:
        return "BYTES"
    return next(k for k, v in DTYPES.items() if v != "object" and np.dtype(v) == arr.dtype)


def _raw(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in arr.ravel())
    return np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).tobytes()


def _json_data(arr: np.ndarray, datatype: str) -> list:
    if datatype == "BYTES":
        return [b.decode("utf-8", "replace") for b in arr.ravel()]
    return arr.ravel().tolist()


def encode_infer(head: dict, tensors: dict[str, np.ndarray], binary: dict[str, bool]) -> tuple[bytes, dict]:
    """-> (body, headers) of an inference response holding the outputs named in `binary` (name ->
    as binary data), in that order; 400 for an output the model does not have."""
    unknown = [n for n in binary if n not in tensors]
    if unknown:
        raise ApiError(400, "unknown_output", f"output {unknown[0]!r} is not an output of this model; outputs: "
                                              f"{', '.join(tensors)}")
    outputs, blobs = [], []
    for name, as_binary in binary.items():
        arr = tensors[name]
        datatype = _datatype_of(arr)
        entry = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if as_binary:
            blob = _raw(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(arr, datatype)
        outputs.append(entry)
    header = json.dumps({**head, "outputs": outputs}, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream",
                                      "inference-header-content-length": str(len(header))}


# ------------------------------------------------------------------------------------------- against the model
def nested_shape(value, name: str) -> tuple[int, ...]:
    """The shape of a JSON value (a scalar: ()); 400 when its lists are ragged."""
    if not isinstance(value, list):
        return ()
    inner = {nested_shape(v, name) for v in value} or {()}
    if len(inner) != 1:
        raise bad(f"input {name}: ragged lists; every row needs the same shape", "bad_shape")
    return (len(value), *inner.pop())


def check_inputs(req: InferRequest, declared: list[dict], max_batch: int) -> dict[str, np.ndarray]:
    """The request's inputs against the model's metadata: names, datatypes, ranks, fixed sizes, one
    batch size (1..max_batch) for all. A trailing dimension of 1 beyond the declared rank is dropped
    ([N, 1] for a per-row string). -> {name: array}."""
    known = {d["name"]: d for d in declared}
    for name in req.inputs:
        if name not in known:
            raise bad(f"input {name!r} is not an input of this model; inputs: {', '.join(known)}", "unknown_input")
    out, batch = {}, None
    for name, spec in known.items():
        if name not in req.inputs:
            raise bad(f"input {name}: missing ({spec['datatype']} {spec['shape']})", "missing_field")
        if req.datatypes[name] != spec["datatype"]:
            raise bad(f"input {name}: datatype {req.datatypes[name]}; this model takes {spec['datatype']}",
                      "bad_datatype")
        arr, want = req.inputs[name], spec["shape"]
        if arr.ndim == len(want) + 1 and arr.shape[-1] == 1:
            arr = arr.reshape(arr.shape[:-1])
        if arr.ndim != len(want) or any(w != -1 and a != w for a, w in zip(arr.shape, want)):
            raise bad(f"input {name}: shape {list(req.inputs[name].shape)}; this model takes {want} (-1: any size)",
                      "bad_shape")
        if batch is not None and arr.shape[0] != batch:
            raise bad(f"input {name}: batch size {arr.shape[0]}, another input's is {batch}", "bad_shape")
        batch = arr.shape[0]
        out[name] = arr
    if batch is None or not 1 <= batch <= max_batch:
        raise bad(f"batch size {batch}: this model takes 1..{max_batch} rows per request (max_batch_size)",
                  "bad_shape")
    return out
