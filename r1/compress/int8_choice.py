"""Static int8 chosen by measurement: which ops to quantize, decided on this CPU.

Whether int8 pays depends on the model and the CPU: int8 convolutions are faster, but every
float op between them (hard-swish, squeeze-excite gates, group norm) costs a dequantize and a
quantize, and a 3-channel first conv is slower in int8 than in float. `choose_int8` quantizes the
model several ways (Conv/Gemm/MatMul only, or every op onnxruntime can run in int8; first conv in
float or not), times each beside the float graph at the given batch sizes (interleaved, medians),
scores each on the validation split, and keeps the fastest one whose metric is within `tolerance`
of the float graph's. The table of candidates is written beside the result (int8_choice.json /
int8_choice.md) and logged, also when no candidate beats float.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("r1.compress")

# (name, quantize every op?, first conv in float?)
CANDIDATES = [("weights", False, False), ("weights+float_first", False, True),
              ("all_ops", True, False), ("all_ops+float_first", True, True)]


def _latencies(paths: dict[str, Path], batch_sizes: tuple[int, ...], rounds: int, threads: int) -> dict:
    """{name: {batch: median ms}}, the graphs timed in alternation round by round."""
    from r1.inference.predictor import Predictor

    preds = {k: Predictor.load(p, threads=threads) for k, p in paths.items()}
    shape = next(iter(preds.values())).input_shape
    out = {k: {} for k in preds}
    for b in batch_sizes:
        x = np.random.default_rng(0).random((b, *shape), dtype=np.float32)
        calls = max(1, 8 // b)
        times = {k: [] for k in preds}
        for p in preds.values():
            p.run(x)
        for _ in range(rounds):
            for k, p in preds.items():
                t0 = time.perf_counter()
                for _ in range(calls):
                    p.run(x)
                times[k].append((time.perf_counter() - t0) / calls * 1e3)
        for k, t in times.items():
            out[k][b] = round(float(np.median(t)), 4)
    return out


def choose_int8(fp32: Path, out: Path, quantize, data_cfg: dict, keep_float: list[str], tolerance: float = 0.01,
                batch_sizes: tuple[int, ...] = (1, 8), rounds: int = 15, threads: int = 1) -> dict:
    """Quantize `fp32` with each candidate (`quantize(path, ops_all, keep_float)` writes one), keep
    the fastest within `tolerance` of float on val as `out`; returns the choice record."""
    from r1.evaluate import get_evaluator
    from r1.evaluate.artifact import evaluate_artifact
    from r1.onnx.graph import read_onnx_meta

    family = read_onnx_meta(fp32).get("r1.family")
    ev = get_evaluator(family)
    key = f"val/{ev.monitor}"
    work = out.parent / "int8_candidates"
    work.mkdir(exist_ok=True)
    paths = {"float": fp32}
    for name, all_ops, first in CANDIDATES:
        keep = sorted(set(keep_float) | ({"first"} if first else set()))
        if name.endswith("+float_first") and "first" in keep_float:
            continue  # the same graph as the candidate without the suffix
        paths[name] = quantize(work / f"{name}.onnx", all_ops, keep)
    lat = _latencies(paths, batch_sizes, rounds, threads)
    rows = []
    for name, path in paths.items():
        metric = evaluate_artifact(path, "val").get(key)
        speed = {b: lat["float"][b] / lat[name][b] for b in batch_sizes}
        rows.append({"candidate": name, "metric": metric, "size_mb": round(path.stat().st_size / 2 ** 20, 3),
                     **{f"ms_bs{b}": lat[name][b] for b in batch_sizes},
                     **{f"speed_bs{b}": round(s, 3) for b, s in speed.items()},
                     "speed_geomean": round(math.exp(sum(math.log(s) for s in speed.values()) / len(speed)), 3)})
    ref = rows[0]["metric"]
    ok = [r for r in rows[1:] if r["metric"] is not None and ref is not None
          and (r["metric"] >= ref - tolerance if ev.mode == "max" else r["metric"] <= ref + tolerance)]
    pick = max(ok or rows[1:], key=lambda r: r["speed_geomean"])
    shutil.copy2(paths[pick["candidate"]], out)
    record = {"chosen": pick["candidate"], "metric_key": key, "tolerance": tolerance, "within_tolerance": bool(ok),
              "faster_than_float": pick["speed_geomean"] > 1.0, "rows": rows}
    (out.parent / "int8_choice.json").write_text(json.dumps(record, indent=2))
    (out.parent / "int8_choice.md").write_text(choice_markdown(record, batch_sizes))
    for r in rows:
        log.info("int8 choice: %-20s %s %.4g  %s", r["candidate"], key, r["metric"] or float("nan"),
                 "  ".join(f"bs{b} {r[f'ms_bs{b}']:.3g} ms ({r[f'speed_bs{b}']:.2f}x)" for b in batch_sizes))
    log.info("int8 choice: %s (%.2fx float, geometric mean over batch %s)%s", pick["candidate"],
             pick["speed_geomean"], "/".join(map(str, batch_sizes)),
             "" if record["faster_than_float"] else " -- slower than the float graph on this CPU")
    return record


def choice_markdown(record: dict, batch_sizes) -> str:
    cols = ["candidate", "metric", "size_mb"] + [f"ms_bs{b}" for b in batch_sizes] + [f"speed_bs{b}" for b in batch_sizes]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in record["rows"]:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return (f"Chosen: **{record['chosen']}** (fastest within {record['tolerance']:g} of float's {record['metric_key']}"
            f"{'' if record['within_tolerance'] else '; none was: fastest overall'}).\n\n" + "\n".join(lines) + "\n")
