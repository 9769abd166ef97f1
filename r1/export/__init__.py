"""Deployment: ONNX export (`onnx.py`), TensorRT engines (`tensorrt.py`) and the one `Predictor`
over torch eager / onnxruntime / TensorRT (`runtime.py`). How a family exports is its spec's
`ExportHook` (`r1.family`)."""
from r1.export.onnx import export_onnx, read_onnx_meta
from r1.export.runtime import Predictor

__all__ = ["Predictor", "export_onnx", "read_onnx_meta"]
