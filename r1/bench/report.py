"""Markdown tables for benchmark rows (the CLI prints them; benchmarks/RESULTS.md records them)."""
from __future__ import annotations

import math

# A batch-1 latency whose p95 is this many times its p50 is dominated by noise (other processes,
# frequency scaling, a cold cache): comparing its p50 with another row's says little.
NOISY_SPREAD = 1.5
NOISE_NOTE = (f"\u2020 p95/p50 latency spread above {NOISY_SPREAD}: this row's latency is noise-dominated; "
              "re-measure (more runs, an idle machine) before comparing it.")


def latency_spread(p50: float, p95: float) -> float:
    return p95 / p50 if p50 > 0 else float("inf")


def is_noisy(p50: float, p95: float) -> bool:
    return latency_spread(p50, p95) > NOISY_SPREAD


def number(v: float) -> str:
    """One number format for every table: 4 significant digits, fixed point (never 1.295e+04), thousands
    separated, no trailing zeros: 12,950 / 123.4 / 1.2 / 0.06612."""
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    digits = max(0, 3 - math.floor(math.log10(abs(v))))
    text = f"{v:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fmt(v) -> str:
    if isinstance(v, float):
        return number(v)
    return str(v)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """`columns`: (key, header). Missing keys print as an empty cell."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k, "")) for k, _ in columns) + " |")
    return "\n".join(lines)


def latency_table(rows: list[dict]) -> str:
    """Rows from `compare_runtimes` / `sweep_batch_sizes`; seconds shown as ms."""
    shown, noisy = [], False
    for r in rows:
        if "unavailable" in r:
            shown.append({"runtime": r["runtime"], "batch": "-", "p50": "unavailable: " + r["unavailable"]})
            continue
        p95 = r["p95"] * 1e3
        if is_noisy(r["p50"], r["p95"]):
            noisy, p95 = True, f"{number(p95)} \u2020"
        shown.append({**r, "p50": r["p50"] * 1e3, "p95": p95, "mean": r["mean"] * 1e3})
    unit = next((r["unit"] for r in rows if r.get("unit")), "items")  # a family's own measure names its unit
    table = markdown_table(shown, [("runtime", "runtime"), ("batch", "batch"), ("p50", "p50 ms"),
                                   ("p95", "p95 ms"), ("mean", "mean ms"), ("throughput", f"{unit}/s"),
                                   ("runs", "runs")])
    note = next((r["note"] for r in rows if r.get("note")), "")
    return table + (f"\n\n{note[:1].upper()}{note[1:]}." if note else "") + ("\n\n" + NOISE_NOTE if noisy else "")


def load_table(rows: list[dict]) -> str:
    shown = [{**r, "p50": r["p50"] * 1e3, "p95": r["p95"] * 1e3, "p99": r["p99"] * 1e3,
              "status": ", ".join(f"{k}: {v}" for k, v in sorted(r["status"].items()))} for r in rows]
    return markdown_table(shown, [("label", "server"), ("concurrency", "concurrency"), ("throughput", "req/s"),
                                  ("p50", "p50 ms"), ("p95", "p95 ms"), ("p99", "p99 ms"),
                                  ("requests", "requests"), ("status", "status counts")])
