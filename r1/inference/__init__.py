"""Inference: the one loader (`load`), the one `Predictor` over torch / onnxruntime / TensorRT, `Result`,
and the image helpers. Below export, serve, bench and the CLI, which import it; it imports no command.

    from r1.inference import load
    results = load("runs/quickstart/student", runtime="onnx").predict(["examples/digit_3.png"])
"""
from r1.inference.images import as_image, image_batch, open_image, resize_normalize
from r1.inference.predictor import Predictor, load, load_any
from r1.inference.result import Result
from r1.inference.runtimes import RUNTIMES, artifact_family, artifact_info, check_runtime, infer_runtime

__all__ = ["RUNTIMES", "Predictor", "Result", "artifact_family", "artifact_info", "as_image", "check_runtime",
           "image_batch", "infer_runtime", "load", "load_any", "open_image", "resize_normalize"]
