"""Blocks shared by every family."""
from r1.layers.conv import ConvBNAct, InvertedResidual, SqueezeExcite, make_divisible

__all__ = ["ConvBNAct", "InvertedResidual", "SqueezeExcite", "make_divisible"]
