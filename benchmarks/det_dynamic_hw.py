"""R1-Det dynamic-HW ONNX export: raw-output parity with torch at sizes other than the trace's, and
batch-1 latency at three input sizes (onnxruntime and torch, 1 thread), against the fixed-size export.

    taskset -c 1 python benchmarks/det_dynamic_hw.py [--flavors tiny small] [--runs 50]

Random-init weights (latency and parity do not depend on training); input size 320 as in the BCCD recipe.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from r1.models.det.export import _DetRaw
from r1.onnx.export import export_onnx
from r1.onnx.graph import ort_session
from r1.registry import build_model

META = {"classes": ["a", "b", "c"], "num_classes": 3,
        "preprocess": {"size": [320, 320], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "letterbox": True}}
PARITY_SIZES = [(256, 320), (384, 224)]
LATENCY_SIZES = [(256, 320), (320, 320), (480, 640)]


def median_ms(runs: int, fn, *args) -> float:
    for _ in range(5):
        fn(*args)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flavors", nargs="+", default=["tiny", "small"])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for flavor in args.flavors:
            torch.manual_seed(0)
            model = build_model("r1_det", flavor=flavor, num_classes=3).eval()
            dyn_path, fixed_path = Path(tmp) / f"{flavor}-dyn.onnx", Path(tmp) / f"{flavor}-fixed.onnx"
            rep = export_onnx(model, dyn_path, meta=META, family="det", dynamic_hw={"max_size": 640})
            export_onnx(model, fixed_path, meta=META, family="det")
            net = _DetRaw(model, level_shapes=True).eval()
            dyn, fixed = ort_session(dyn_path), ort_session(fixed_path)
            row = {"flavor": flavor, "export_seconds": rep["export_seconds"], "export_check": rep["max_abs_diff"],
                   "parity": {}, "ms": {}}
            for h, w in PARITY_SIZES:
                x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h))
                with torch.no_grad():
                    ref = [t.numpy() for t in net(x)]
                got = dyn.run(None, {"images": x.numpy()})
                row["parity"][f"{h}x{w}"] = {name: float(np.abs(r.astype(np.float64) - g).max())
                                             for name, r, g in zip(("cls_logits", "boxes", "level_shapes"), ref, got)}
            for h, w in LATENCY_SIZES:
                x = torch.randn(1, 3, h, w)
                xn = x.numpy()
                cell = {"onnx_dynamic": median_ms(args.runs, dyn.run, None, {"images": xn})}
                with torch.inference_mode():
                    cell["torch"] = median_ms(args.runs, net, x)
                if (h, w) == (320, 320):
                    cell["onnx_fixed"] = median_ms(args.runs, fixed.run, None, {"images": xn})
                row["ms"][f"{h}x{w}"] = cell
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
