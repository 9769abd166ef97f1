"""R1: from-scratch PyTorch toolkit: data -> train -> distill -> prune -> quantize -> export -> serve."""

__version__ = "0.2.0"


def load(path, runtime=None, threads: int = 1):
    """Load any trained or exported model (run dir, model.safetensors, .onnx, TensorRT .engine) as
    its family's Predictor: `predict(list_of_inputs, **options) -> list of Result`.
    `runtime`: "torch", "onnx" or "tensorrt" (default: from the file)."""
    from r1.export.runtime import Predictor
    return Predictor.load(path, runtime=runtime, threads=threads)


def load_model(path, device="cpu"):
    """Load a trained model from a run dir or a model.safetensors as a torch module, in eval mode."""
    from r1.artifacts import load_model as _load
    return _load(path, device)


__all__ = ["load", "load_model", "__version__"]
