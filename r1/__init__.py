"""R1: from-scratch PyTorch toolkit: data -> train -> distill -> prune -> quantize -> export -> serve."""

__version__ = "0.1.0"


def load_model(path, device="cpu"):
    """Load a trained model from a run dir or a model.safetensors; returned in eval mode."""
    from r1.artifacts import load_model as _load
    return _load(path, device)


__all__ = ["load_model", "__version__"]
