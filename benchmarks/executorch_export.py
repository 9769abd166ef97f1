"""ExecuTorch (XNNPACK) against onnxruntime and torch eager at batch 1, one thread: parity on raw
outputs, file size, median latency over interleaved rounds (issue 16, "Mobile export").

    taskset -c 0 python benchmarks/executorch_export.py RUN [RUN ...] [--rounds 5 --reps 40]

RUN: a trained run dir of an image family (cls, det). Writes model.pte / model.onnx into a temp dir.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from r1.artifacts import load_model
from r1.export.executorch import export_executorch
from r1.onnx.export import example_input, export_onnx, get_export_hook
from r1.onnx.graph import ort_session


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def bench(run: Path, rounds: int, reps: int) -> dict:
    from executorch.runtime import Runtime

    model = load_model(run).eval()
    hook = get_export_hook(model.r1_family)
    net = hook.wrap(model, hook.options).eval()
    x = example_input(model.r1_family, model.r1_meta, 1, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        pte, onnx = Path(tmp) / "model.pte", Path(tmp) / "model.onnx"
        report = export_executorch(model, pte, reps=5)
        export_onnx(model, onnx)
        method = Runtime.get().load_program(str(pte)).load_method("forward")
        sess = ort_session(onnx, 1)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        runners = {"executorch": lambda: method.execute([x]), "onnxruntime": lambda: sess.run(None, feed),
                   "torch": lambda: net(x)}
        per = {k: [] for k in runners}
        with torch.no_grad():
            for f in runners.values():
                for _ in range(5):
                    f()
            for r in range(rounds):
                for name in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
                    per[name].append(median_ms(runners[name], reps))
        row = {"run": str(run), "family": model.r1_family, "max_abs_diff": report["max_abs_diff"],
               "pte_bytes": pte.stat().st_size, "onnx_bytes": onnx.stat().st_size,
               "export_seconds": report["export_seconds"]}
        row.update({f"{k}_ms": round(statistics.median(v), 3) for k, v in per.items()})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [bench(r, args.rounds, args.reps) for r in args.runs]
    print("| run | family | max abs diff vs torch | .pte MB | .onnx MB | executorch ms | onnxruntime ms | torch ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['family']} | {r['max_abs_diff']:.1e} | {r['pte_bytes'] / 1e6:.2f} | "
              f"{r['onnx_bytes'] / 1e6:.2f} | {r['executorch_ms']} | {r['onnxruntime_ms']} | {r['torch_ms']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
