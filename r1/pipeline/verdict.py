"""Which variant to deploy: the report's opening line, from the measured rows alone.

A variant is *deployable* when its metric is within the family's tolerance of the best row's
(`FamilySpec.tolerance`, or the bench stage's `tolerance`); the verdict names the deployable
variant with the lowest batch-1 latency in onnxruntime (the runtime every variant can be served
in; a torch row's ONNX export is measured for this), compares it with the first row (the teacher)
in that same runtime, lists the Pareto front over (latency, size, metric), and says which int8
variants run slower than their own float graph. Baseline rows (a bench stage's `baselines`) are
shown in the report only: never picked, never the best metric, never on the front.
"""
from __future__ import annotations

from pathlib import Path

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_summary() -> dict:
    """The CPU model name and the flags that decide int8/bf16 speed (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": "unknown", "flags": []}
    fields = dict(ln.split(":", 1) for ln in text.split("\n\n")[0].splitlines() if ":" in ln)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", "unknown"), "flags": [f for f in CPU_FLAGS if f in flags]}


def deploy_latency(row: dict) -> float | None:
    """Batch-1 p50 in onnxruntime (the row's own latency when it is an ONNX row)."""
    return row.get("onnx_ms_p50") or (row["latency_ms_p50"] if row["runtime"] == "onnxruntime" else None)


def _better(a: float, b: float, mode: str) -> bool:
    return a >= b if mode == "max" else a <= b


def pareto_front(rows: list[dict], mode: str) -> list[str]:
    """Names of the rows no other row beats on latency, size and metric at once."""
    scored = [r for r in rows if deploy_latency(r) is not None and r.get("metric") is not None]

    def dominates(a: dict, b: dict) -> bool:
        no_worse = (deploy_latency(a) <= deploy_latency(b) and a["size_mb"] <= b["size_mb"]
                    and _better(a["metric"], b["metric"], mode))
        better = (deploy_latency(a) < deploy_latency(b) or a["size_mb"] < b["size_mb"] or a["metric"] != b["metric"])
        return no_worse and better

    return [r["name"] for r in scored if not any(dominates(o, r) for o in scored if o is not r)]


def verdict(rows: list[dict], mode: str, tolerance: float, cpu: dict) -> dict:
    """-> {"deploy", "line", "pareto", "slower_int8"}; "deploy" None when no row qualifies.
    Rows marked `baseline` (reference architectures) are left out of all of it."""
    rows = [r for r in rows if not r.get("baseline")]
    scored = [r for r in rows if r.get("metric") is not None]
    slower = [f"{r['name']} {r['float_ms_p50'] / r['latency_ms_p50']:.2f}x"
              for r in rows if r.get("float_ms_p50") and r["latency_ms_p50"] > r["float_ms_p50"]]
    front = pareto_front(rows, mode)
    flags = f"{cpu['model']} ({', '.join(cpu['flags']) or 'no avx2'})"
    out = {"pareto": front, "slower_int8": slower, "deploy": None, "cpu": cpu}
    if not scored:
        out["line"] = f"**Verdict:** no variant has a metric to compare. Measured on {flags}."
        return out
    best = (max if mode == "max" else min)(r["metric"] for r in scored)
    ok = [r for r in scored if deploy_latency(r) is not None
          and (r["metric"] >= best - tolerance if mode == "max" else r["metric"] <= best + tolerance)]
    if not ok:
        out["line"] = (f"**Verdict:** no variant within {tolerance:g} of the best {scored[0]['metric_name']} "
                       f"{best:.4g} runs in onnxruntime. Measured on {flags}.")
        return out
    pick = min(ok, key=deploy_latency)
    base = rows[0]
    how = "" if pick["runtime"] == "onnxruntime" else " exported to ONNX"
    parts = [f"**Verdict:** deploy `{pick['name']}`{how}: {pick['metric_name']} {pick['metric']:.4g} "
             f"(best {best:.4g}, tolerance {tolerance:g}), {deploy_latency(pick):.3g} ms at batch 1 in onnxruntime"]
    if pick is not base and deploy_latency(base):
        parts.append(f"{deploy_latency(base) / deploy_latency(pick):.2f}x the speed of `{base['name']}` with both in "
                     f"onnxruntime, {base['size_mb'] / pick['size_mb']:.2f}x smaller")
    parts.append(f"Pareto front (latency, size, metric): {', '.join(front)}")
    parts.append(f"int8 slower than its float graph: {', '.join(slower)}" if slower
                 else "every int8 variant is faster than its float graph")
    out["deploy"] = pick["name"]
    out["line"] = "; ".join(parts) + f". Measured on {flags}."
    return out
