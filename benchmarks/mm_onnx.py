"""A trained mm model (R1-MM, CNN+MLP, CNN+RN) in torch vs onnxruntime fp32 vs static int8: latency at
batch 1 and 32 (real test questions, interleaved rounds, medians) and test accuracy of each; with
--profile, onnxruntime's per-node profile of fp32 and int8 summed by op type (why int8 is or is not
faster).

    taskset -c 1 .venv/bin/python benchmarks/mm_onnx.py RUN_DIR [--rounds 15] [--profile]

int8: `r1.compress.quantize.quantize_onnx` static (QDQ, per-channel int8 weights, uint8 activations
calibrated on 8 training batches, Conv/Gemm/MatMul), once with reduce_range (7-bit weights, the
default) and once without. Writes benchmarks/results/mm_onnx.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import r1  # noqa: E402
from r1.compress.quantize import quantize_onnx  # noqa: E402
from r1.evaluate.artifact import evaluate_artifact  # noqa: E402
from r1.inference.runtimes import onnx_file  # noqa: E402
from r1.onnx.graph import ort_session  # noqa: E402

BATCHES = (1, 32)


def test_batch(run: Path, n: int) -> dict[str, np.ndarray]:
    """The first n test questions, padded to the longest of them."""
    from r1.artifacts import read_info
    from r1.config import DataConfig, from_dict
    from r1.data import build_data

    bundle = build_data(from_dict(DataConfig, read_info(run)["data"], "data"), seed=0)
    inputs, _ = bundle.collate([bundle.test[i] for i in range(n)])
    return {k: v.numpy() for k, v in inputs.items()}


def time_all(runners: dict, feeds: dict, rounds: int) -> dict[str, float]:
    """{name: median ms per call}, the runners called in alternation round by round."""
    calls = max(1, 8 // len(feeds["images"]))
    times = defaultdict(list)
    for fn in runners.values():
        fn(feeds)
    for _ in range(rounds):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(feeds)
            times[name].append((time.perf_counter() - t0) / calls * 1e3)
    return {k: round(statistics.median(v), 3) for k, v in times.items()}


def profile(path: Path, feeds: dict, runs: int, tmp: Path) -> dict:
    """onnxruntime's node profile: per node the median ms over `runs` calls (preemption on a shared
    CPU spikes single calls), summed by op type; and the op counts of the optimised graph."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp / path.stem)
    so.optimized_model_filepath = str(tmp / f"{path.stem}-optimized.onnx")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[(e["name"], e["args"]["op_name"])].append(e["dur"] / 1e3)
    by_op = defaultdict(float)
    for (_, op), durs in per_node.items():
        by_op[op] += statistics.median(durs[1:] or durs)  # the first call plans and allocates
    counts = defaultdict(int)
    for node in onnx.load(so.optimized_model_filepath).graph.node:
        counts[node.op_type] += 1
    return {"ms": dict(sorted(((k, round(v, 4)) for k, v in by_op.items()), key=lambda kv: -kv[1])),
            "total_ms": round(sum(by_op.values()), 3), "nodes": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/mm_onnx.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = args.run
    tmp = Path(tempfile.mkdtemp(prefix="mm-onnx-"))
    fp32 = onnx_file(run)
    data = json.loads((run / "model.json").read_text())["data"]
    graphs = {"onnx-fp32": fp32}
    for name, rr in (("int8", True), ("int8-8bit", False)):
        t0 = time.perf_counter()
        graphs[name] = quantize_onnx(fp32, tmp / f"{name}.onnx", "static", data, reduce_range=rr)
        print(f"{name}: quantized in {time.perf_counter() - t0:.1f}s", flush=True)
    model = r1.load_model(run).eval()
    sessions = {k: ort_session(p) for k, p in graphs.items()}

    @torch.inference_mode()
    def torch_run(feeds):
        return model({k: torch.from_numpy(v) for k, v in feeds.items()})

    runners = {"torch": torch_run, **{k: (lambda feeds, s=s: s.run(None, feeds)) for k, s in sessions.items()}}
    big = test_batch(run, max(BATCHES))
    latency = {}
    for b in BATCHES:
        feeds = {k: np.ascontiguousarray(v[:b]) for k, v in big.items()}
        latency[b] = time_all(runners, feeds, args.rounds)
        print(f"batch {b}: {latency[b]}", flush=True)
    accuracy = {"torch": evaluate_artifact(run, "test")}
    for k, p in graphs.items():
        accuracy[k] = evaluate_artifact(p, "test")
    keys = ("test/accuracy", "test/accuracy_relational", "test/accuracy_nonrelational")
    for k, m in accuracy.items():
        print(f"{k}: " + "  ".join(f"{key} {m.get(key, float('nan')):.4f}" for key in keys), flush=True)
    out = {"run": str(run), "model": json.loads((run / "model.json").read_text())["model"],
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
           "latency_ms": latency, "accuracy": {k: {key: m.get(key) for key in keys} for k, m in accuracy.items()},
           "size_mb": {k: round(p.stat().st_size / 2 ** 20, 3) for k, p in graphs.items()}}
    if args.profile:
        out["profile_ms"] = {}
        for b in BATCHES:
            feeds = {k: np.ascontiguousarray(v[:b]) for k, v in big.items()}
            out["profile_ms"][b] = {k: profile(p, feeds, max(8, 32 // b), tmp) for k, p in graphs.items()}
            for k, prof in out["profile_ms"][b].items():
                print(f"profile batch {b} {k}: total {prof['total_ms']} ms: "
                      + ", ".join(f"{op} {ms:.3g}" for op, ms in list(prof["ms"].items())[:12]))
                print(f"  nodes: {prof['nodes']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
