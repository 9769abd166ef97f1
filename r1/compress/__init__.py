"""Model transforms: distillation (a wrapper model), structured pruning, quantization."""
