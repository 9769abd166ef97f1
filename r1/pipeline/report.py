"""The comparison report: one measured row per model variant, as JSON, markdown and plots."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from r1.bench.latency import measure_latency
from r1.bench.report import NOISE_NOTE, is_noisy, number
from r1.errors import ConfigError, R1Error
from r1.evaluate import get_evaluator
from r1.evaluate.artifact import evaluate_artifact
from r1.family import get_family
from r1.inference.predictor import load_any
from r1.pipeline.plots import plot_report
from r1.pipeline.recipe import BenchStage
from r1.pipeline.verdict import cpu_summary, verdict
from r1.train.hardware import set_threads

log = logging.getLogger("r1.pipeline")

COLUMNS = ["name", "runtime", "params", "mmacs", "size_mb", "latency_ms_p50", "latency_ms_p95", "throughput_bs1",
           "throughput_bs8", "throughput_bs32", "metric_name", "metric"]
HIDDEN = ("threads", "baseline", "speed_unit", "speed_note")  # row keys the markdown table leaves out (a baseline is marked in its name)


def artifact_file(path: Path) -> Path:
    return path if path.suffix == ".onnx" else path / "model.safetensors"


def count_params(model) -> int:
    if hasattr(model, "session"):  # ONNX: every initializer element (int8 weights included)
        import onnx
        graph = onnx.load(str(model.path)).graph
        return int(sum(np.prod(t.dims) for t in graph.initializer))
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def interleaved_p50(models: list, batch, runs: int) -> list[float]:
    """Batch latency (ms, median) of each model, timed in alternation so that load changes on the
    machine affect them alike."""
    times = [[] for _ in models]
    with torch.no_grad():
        for m in models:
            for _ in range(3):
                m(batch)
        for _ in range(runs):
            for t, m in zip(times, models):
                t0 = time.perf_counter()
                m(batch)
                t.append(time.perf_counter() - t0)
    return [round(float(np.median(t)) * 1e3, 3) for t in times]


def onnx_latency(path: Path, one, runs: int, threads: int) -> dict:
    """Batch-1 p50 in onnxruntime: a torch row's ONNX export (cached in the run dir) as `onnx_ms_p50`;
    an int8 row's own float graph (the quantize stage's fp32.onnx) as `float_ms_p50`, interleaved."""
    from r1.inference.runtimes import onnx_file

    if path.suffix != ".onnx":
        try:
            return {"onnx_ms_p50": interleaved_p50([load_any(onnx_file(path), threads=threads)], one, runs)[0]}
        except R1Error as err:  # a family without ONNX export: no onnxruntime latency
            log.info("bench: no onnxruntime latency for %s (%s)", path, err)
            return {}
    fp32 = path.with_name("fp32.onnx")
    if not fp32.is_file():
        return {}
    own, ref = interleaved_p50([load_any(path, threads=threads), load_any(fp32, threads=threads)], one, runs)
    return {"float_ms_p50": ref, "int8_ms_p50_interleaved": own}


def family_speed(bench, path: Path, stage: BenchStage, threads: int) -> dict:
    """The speed columns from a family's own measure (`FamilySpec.bench`, e.g. seconds per generated token):
    batch-1 p50/p95 as the latency, throughput at 1 and `throughput_batch`; a torch row's ONNX export at
    batch 1 as `onnx_ms_p50`, an int8 row's own float graph (fp32.onnx beside it) as `float_ms_p50`."""
    from r1.inference.predictor import Predictor

    sizes = sorted({1, stage.throughput_batch})
    rows = {r["batch"]: r for r in bench(Predictor.load(path, threads=threads), sizes, stage.runs)}
    out = {"latency_ms_p50": round(rows[1]["p50"] * 1e3, 3), "latency_ms_p95": round(rows[1]["p95"] * 1e3, 3),
           **{f"throughput_bs{b}": round(r["throughput"], 1) for b, r in rows.items()},
           "speed_unit": rows[1].get("unit", "items"), "speed_note": rows[1].get("note", "")}
    try:
        if path.suffix != ".onnx":
            out["onnx_ms_p50"] = round(bench(Predictor.load(path, runtime="onnx", threads=threads), [1],
                                             stage.runs)[0]["p50"] * 1e3, 3)
        elif path.with_name("fp32.onnx").is_file():
            out["float_ms_p50"] = round(bench(Predictor.load(path.with_name("fp32.onnx"), threads=threads), [1],
                                              stage.runs)[0]["p50"] * 1e3, 3)
    except R1Error as err:  # no ONNX export for this model: no onnxruntime latency
        log.info("bench: no onnxruntime latency for %s (%s)", path, err)
    return out


def measure_row(name: str, path: Path, stage: BenchStage, threads: int) -> dict:
    model = load_any(path, threads=threads)
    family, meta = model.r1_family, model.r1_meta
    spec = get_family(family)
    g = torch.Generator().manual_seed(0)
    make = spec.hook("example_inputs", "benchmark inputs")
    one = make(meta, 1, g)
    if spec.bench is not None:
        speed = family_speed(spec.hook("bench"), path, stage, threads)
    else:
        many = make(meta, stage.throughput_batch, g)
        with torch.no_grad():
            lat = measure_latency(model, one, runs=stage.runs, warmup=5)
            thr = measure_latency(model, many, runs=max(5, stage.runs // 4), warmup=2)
        speed = {"latency_ms_p50": round(lat["p50"] * 1e3, 3), "latency_ms_p95": round(lat["p95"] * 1e3, 3),
                 f"throughput_bs{stage.throughput_batch}": round(thr["throughput"], 1),
                 **onnx_latency(path, one, stage.runs, threads)}
    monitor = get_evaluator(family).monitor
    try:
        split, metrics = "test", evaluate_artifact(path, "test")
    except ConfigError:  # no test split (e.g. a first language-model stage): its validation split
        split, metrics = "val", evaluate_artifact(path, "val")
    return {"name": name, "runtime": "onnxruntime" if path.suffix == ".onnx" else "torch",
            "params": count_params(model), "mmacs": _mmacs(model, one),
            "size_mb": round(artifact_file(path).stat().st_size / 2 ** 20, 3), **speed,
            "metric_name": f"{split}/{monitor}", "metric": metrics.get(f"{split}/{monitor}"), "threads": threads}


def _mmacs(model, one) -> float | None:
    """Millions of multiply-accumulates of one input (torch models; an exported graph: None)."""
    if hasattr(model, "session") or not isinstance(model, torch.nn.Module):
        return None
    from r1.compress.prune import count_macs_of

    try:
        return round(count_macs_of(model, one) / 1e6, 3)
    except RuntimeError:  # an op the FLOP counter cannot trace: leave the column empty
        return None


def build_report(stage: BenchStage, outputs: dict[str, str], out_dir: Path) -> dict:
    threads = set_threads(stage.threads)
    rows = []
    for name in [*stage.rows, *stage.baselines]:
        log.info("bench: measuring %s (%s)", name, outputs[name])
        rows.append({**measure_row(name, Path(outputs[name]), stage, threads),
                     **({"baseline": True} if name in stage.baselines else {})})
    report = {"rows": rows, "threads": threads, "runs": stage.runs,
              "noisy_latency": [r["name"] for r in rows if is_noisy(r["latency_ms_p50"], r["latency_ms_p95"])],
              "torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}
    spec = get_family(load_any(Path(outputs[stage.rows[0]]), threads=threads).r1_family)
    report["verdict"] = verdict(rows, spec.mode, stage.tolerance or spec.tolerance, cpu_summary())
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(markdown(report))
    plot_report(rows, outputs, out_dir)
    return report


def markdown(report: dict) -> str:
    rows = report["rows"]
    keys = list(dict.fromkeys(k for r in rows for k in r))  # every row's columns (e.g. an int8 row's float_ms_p50)
    cols = [c for c in COLUMNS if c in keys] + [c for c in keys if c not in COLUMNS and c not in HIDDEN]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    noisy = {r["name"] for r in rows if is_noisy(r["latency_ms_p50"], r["latency_ms_p95"])}
    for r in rows:
        shown = {**r, "latency_ms_p95": f"{number(r['latency_ms_p95'])} \u2020"} if r["name"] in noisy else r
        shown = {**shown, "name": f"{r['name']} (baseline)"} if r.get("baseline") else shown
        lines.append("| " + " | ".join(_fmt(shown.get(c)) for c in cols) + " |")
    base = rows[0]
    ratios = [f"- {r['name']}: {base['latency_ms_p50'] / r['latency_ms_p50']:.2f}x the speed of {base['name']} "
              f"(batch-1 p50{', noisy' if noisy & {r['name'], base['name']} else ''}), "
              f"{base['size_mb'] / r['size_mb']:.2f}x smaller on disk" for r in rows[1:]]
    head = (report["verdict"]["line"] + "\n\n" if "verdict" in report else "") + (
            f"Measured with {report['threads']} thread(s), {report['runs']} timed batch-1 runs per model, "
            f"torch {report['torch']}, CPU capability {report['cpu']}.\n\n")
    if rows[0].get("speed_note"):  # a family's own speed measure: what latency and throughput mean
        head += f"Speed: {rows[0]['speed_note']}.\n\n"
    note = "\n" + NOISE_NOTE + "\n" if noisy else ""
    return head + "\n".join(lines) + "\n\n" + "\n".join(ratios) + "\n" + note


def _fmt(v) -> str:
    if isinstance(v, float):
        return number(v)
    return "" if v is None else str(v)
