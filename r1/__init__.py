"""R1: from-scratch PyTorch toolkit: data -> train -> distill -> prune -> quantize -> export -> serve."""

from r1.version import __version__


def load(path, runtime=None, threads: int = 1):
    """Load any trained or exported model (run dir, model.safetensors, .onnx, TensorRT .engine) as
    its family's Predictor: `predict(list_of_inputs, **options) -> list of Result`.
    `runtime`: "torch", "onnx" or "tensorrt" (default: from the file)."""
    from r1.inference import load as _load
    return _load(path, runtime=runtime, threads=threads)


def load_model(path, device="cpu"):
    """Load a trained model from a run dir or a model.safetensors as a torch module, in eval mode."""
    from r1.artifacts import load_model as _load
    return _load(path, device)


__all__ = ["load", "load_model", "__version__"]
