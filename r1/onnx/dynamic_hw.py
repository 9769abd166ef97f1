"""Dynamic height and width for image exports (`r1 export --dynamic-hw`).

A family whose export hook has a `stride` (e.g. a detector with an FPN) can export one graph that
takes any H, W that are multiples of that stride. The range `--min-size/--opt-size/--max-size`
(pixels, per side) is checked against the stride, written into the ONNX metadata
(`r1.dynamic_hw`) and becomes the TensorRT optimisation profile of H and W.

    r1.dynamic_hw   {"stride": 32, "min": 64, "opt": 320, "max": 640}  (JSON, pixels per side)

The data meta's `preprocess` gains `"stride"` and `"min_size"`: the family's predictor then
letterboxes each image to the configured size (long side) and pads the short side up to a
multiple of the stride (at least `min_size`) instead of to a square.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from r1.errors import ConfigError

META_KEY = "r1.dynamic_hw"


def round_up(n: int, stride: int) -> int:
    return -(-int(n) // stride) * stride


@dataclass(frozen=True)
class SizeRange:
    """Input sides (pixels) a dynamic-HW graph accepts: multiples of `stride` within [min, max];
    `opt` is the size TensorRT tunes for and the size the graph is traced at."""

    stride: int
    min: int
    opt: int
    max: int

    def to_json(self) -> str:
        return json.dumps({"stride": self.stride, "min": self.min, "opt": self.opt, "max": self.max})

    def profile(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(H, W) at min, opt and max."""
        return (self.min, self.min), (self.opt, self.opt), (self.max, self.max)

    def check(self, h: int, w: int) -> None:
        for side, n in (("height", h), ("width", w)):
            if n % self.stride or not self.min <= n <= self.max:
                raise ConfigError(f"input {side} {n}: the model takes multiples of {self.stride} "
                                  f"from {self.min} to {self.max}")


def resolve_range(stride: int, size: int, min_size: int = 0, opt_size: int = 0, max_size: int = 0) -> SizeRange:
    """The range from the options (0: default) and the model's configured input `size`.

    Defaults: min = the stride, opt = size rounded up to the stride, max = twice that. ConfigError
    (one line, naming the option and the allowed values) when a value is not a positive multiple of
    the stride or the three are out of order."""
    if stride < 1:
        raise ConfigError(f"dynamic-HW export: the model's stride must be >= 1, got {stride}")
    opt_default = round_up(size, stride)
    values = {"--min-size": min_size or stride, "--opt-size": opt_size or opt_default,
              "--max-size": max_size or 2 * max(opt_size or opt_default, opt_default)}
    for name, value in values.items():
        if value < stride or value % stride:
            raise ConfigError(f"{name}: {value} is not allowed; allowed: multiples of the model's stride "
                              f"{stride} ({stride}, {2 * stride}, {3 * stride}, ...)")
    lo, opt, hi = values.values()
    if not lo <= opt <= hi:
        raise ConfigError(f"--min-size/--opt-size/--max-size: need min <= opt <= max, got {lo}, {opt}, {hi}")
    if lo == hi:
        raise ConfigError(f"--min-size/--max-size: both {lo}, a fixed size; allowed: min < max "
                          f"(or export without --dynamic-hw)")
    return SizeRange(stride, lo, opt, hi)


def read_range(props: dict) -> SizeRange | None:
    """The range recorded in an export's metadata; None for a fixed-size export."""
    if META_KEY not in props:
        return None
    d = json.loads(props[META_KEY])
    return SizeRange(int(d["stride"]), int(d["min"]), int(d["opt"]), int(d["max"]))


def export_dims(rng: SizeRange) -> dict:
    """torch.export dynamic dims for the H (2) and W (3) axes of an NCHW input: stride * k."""
    import torch

    lo, hi = rng.min // rng.stride, rng.max // rng.stride
    return {2: rng.stride * torch.export.Dim("h_blocks", min=lo, max=hi),
            3: rng.stride * torch.export.Dim("w_blocks", min=lo, max=hi)}


def dynamic_meta(meta: dict, rng: SizeRange) -> dict:
    """The data meta with the letterbox-to-stride rule in its preprocess."""
    return {**meta, "preprocess": {**meta.get("preprocess", {}), "stride": rng.stride, "min_size": rng.min}}


def verify_size(rng: SizeRange) -> tuple[int, int]:
    """A non-square (H, W) other than the trace's (opt x opt), within the range, for the export check."""
    h = rng.opt
    w = max(rng.min, round_up(rng.opt // 2, rng.stride))
    if w == h:  # opt is the smallest size: go up instead
        w = min(rng.max, h + rng.stride)
    return h, w
