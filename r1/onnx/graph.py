"""Reading and running R1's ONNX graphs: their metadata (`r1.*` metadata_props, written by
`r1.onnx.export`), onnxruntime CPU sessions with explicit thread counts, and output comparison."""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np

from r1.errors import ConfigError

FORMAT = "r1-onnx/1"
INPUT_NAME = "images"


# Notes the export and quantization libraries print that a user of R1 cannot act on (R1 picks the
# settings they are about): torch.export renaming dynamic axes that share a constraint, onnx_ir typing an
# empty attribute of the NMS graph, onnxruntime suggesting its shape pre-processing (R1's graphs are
# already shape-inferred; its int8 choices are measured, benchmarks/RESULTS.md).
QUIET_WARNINGS = (r"# The axis name: .* will not be used, since it shares the same shape constraints",)
QUIET_LOGS = ("Attribute type is ambiguous because it is an empty sequence",
              "Please consider to run pre-processing before quantization")


class _DropNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(QUIET_LOGS)


@contextlib.contextmanager
def quiet_tools():
    """Run an export or a quantization without the libraries' unactionable notes (QUIET_*); every
    other warning still shows."""
    drop = _DropNotes()
    loggers = [logging.getLogger(), logging.getLogger("onnx_ir._convenience")]
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for lg in loggers:
            lg.addFilter(drop)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeFilter(drop)


def read_onnx_meta(path: str | Path) -> dict[str, str]:
    """The metadata_props of an .onnx file as a dict (values as stored: strings)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model not found: {path}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and friends
        raise ConfigError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None
    props = {e.key: e.value for e in proto.metadata_props}
    if props.get("r1.format") != FORMAT:
        raise ConfigError(f"{path}: no R1 metadata (r1.format={props.get('r1.format')!r}); "
                          f"export it with `r1 export`")
    return props


def ort_session(path: str | Path, threads: int = 1, inter_threads: int = 1):
    """An onnxruntime CPU session with explicit thread counts (the default uses every core)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = inter_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def max_abs_diff(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    if len(ref) != len(got) or any(r.shape != g.shape for r, g in zip(ref, got)):
        return float("inf")
    return max((float(np.abs(r.astype(np.float64) - g).max()) for r, g in zip(ref, got) if r.size), default=0.0)
