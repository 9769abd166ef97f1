"""Deployment: ONNX export (`onnx.py`), TensorRT engines (`tensorrt.py`) and the one `Predictor`
over torch eager / onnxruntime / TensorRT (`runtime.py`)."""
from r1.export.onnx import ExportHook, export_onnx, read_onnx_meta, register_export_hook
from r1.export.runtime import Predictor

__all__ = ["ExportHook", "Predictor", "export_onnx", "read_onnx_meta", "register_export_hook"]
