"""Static int8 choices side by side on one trained classifier: size, accuracy, batch-1 latency.

    .venv/bin/python benchmarks/int8_variants.py RUN_DIR [--out-dir runs/int8_variants]

For each (per-channel or per-tensor weights) x (first/last layers kept in float or not), the run is
quantized with onnxruntime's static QDQ flow (same calibration batches), evaluated on its test split,
and timed at batch 1 (1 thread, interleaved rounds, median) next to the fp32 ONNX of the same model.
Both files are compacted the same way (r1/onnx/compact.py), so size ratios compare weights, not
exporter debris.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from r1.artifacts import read_info  # noqa: E402
from r1.compress.quantize import quantize_onnx  # noqa: E402
from r1.evaluate.artifact import evaluate_artifact  # noqa: E402
from r1.onnx.export import export_onnx  # noqa: E402
from r1.onnx.graph import ort_session  # noqa: E402

VARIANTS = {"per-channel, first+last float": (True, ["first", "last"]), "per-channel, all int8": (True, []),
            "per-tensor, first+last float": (False, ["first", "last"]), "per-tensor, all int8": (False, [])}


def batch1_ms(paths: dict[str, Path], rounds: int = 20, calls: int = 20) -> dict[str, float]:
    sessions = {k: ort_session(p) for k, p in paths.items()}
    first = next(iter(sessions.values())).get_inputs()[0]
    x = np.random.default_rng(0).standard_normal((1, *first.shape[1:])).astype(np.float32)
    times = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(10):
            s.run(None, {first.name: x})
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                s.run(None, {first.name: x})
            times[k].append((time.perf_counter() - t0) / calls * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="trained classification run dir")
    ap.add_argument("--out-dir", default="runs/int8_variants")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = read_info(args.run)
    (out / "model.json").write_text((Path(args.run) / "model.json").read_text())  # data config for evaluation
    paths = {"fp32": out / "fp32.onnx"}
    export_onnx(args.run, paths["fp32"])
    for i, (name, (per_channel, keep)) in enumerate(VARIANTS.items()):
        paths[name] = quantize_onnx(paths["fp32"], out / f"int8_{i}.onnx", "static", info["data"], 8, keep,
                                    per_channel=per_channel)
    ms = batch1_ms(paths)
    data = [f"data.name={info['data']['name']}"]
    fp32_size = paths["fp32"].stat().st_size
    print("| model | size KB | smaller than fp32 | test accuracy | batch-1 ms | speed vs fp32 |")
    print("|---|---|---|---|---|---|")
    for name, p in paths.items():
        acc = evaluate_artifact(p, overrides=data)["test/accuracy"]
        size = p.stat().st_size
        print(f"| {name} | {size / 1024:.0f} | {fp32_size / size:.2f}x | {acc:.4f} | {ms[name]:.3f} | "
              f"{ms['fp32'] / ms[name]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
