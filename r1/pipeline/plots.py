"""The report's plots: metric vs latency (log axis, labels that do not collide, noisy rows marked),
model size (horizontal bars), training curves (the primary loss where a model has one)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from r1.bench.report import NOISY_SPREAD, is_noisy

# Label offsets (points) tried around a marker, nearest ring first: right, left, above, below, diagonals.
_OFFSETS = [(round(dx * r), round(dy * r)) for r in (1, 2, 3, 4.5, 6)
            for dx, dy in ((6, 3), (6, -9), (-6, 3), (-6, -9), (0, 10), (0, -14), (8, 12), (8, -18), (-8, 12),
                           (-8, -18))]


def place_labels(ax, xs: list[float], ys: list[float], labels: list[str]) -> list:
    """Annotate each point at the first offset whose text box overlaps no earlier label, no marker, not
    the legend and stays inside the axes (the least crowded offset when none fits); a thin leader line
    ties each label to its point. Call after the axes are laid out (fig.canvas.draw()). Returns the texts."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    markers = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    placed, texts = ([legend.get_window_extent(renderer)] if legend else []), []
    for x, y, label in zip(xs, ys, labels):
        best = None
        for dx, dy in _OFFSETS:
            text = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                               ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top")
            box = text.get_window_extent(renderer).expanded(1.05, 1.1)
            hits = sum(box.overlaps(b) for b in placed) + sum(box.contains(*m) for m in markers)
            outside = not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1))
            cost = hits + 10 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, text, box, (dx, dy))
            else:
                text.remove()
            if cost == 0:
                break
        cost, text, box, _ = best
        text.remove()  # the same label again, now with its leader line
        text = ax.annotate(label, (x, y), textcoords="offset points", xytext=text.get_position(), fontsize=8,
                           ha=text.get_ha(), va=text.get_va(),
                           arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.6", "shrinkA": 0, "shrinkB": 4})
        placed.append(box)
        texts.append(text)
    return texts


def plot_metric_vs_latency(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r["latency_ms_p50"] for r in rows]
    ys = [r["metric"] if r["metric"] is not None else float("nan") for r in rows]
    noisy = [is_noisy(r["latency_ms_p50"], r["latency_ms_p95"]) for r in rows]
    for r, x, y, bad in zip(rows, xs, ys, noisy):
        color = "tab:orange" if r["runtime"] == "onnxruntime" else "tab:blue"
        # the bar reaches p95: how far the slow runs spread; a hollow marker flags a noisy row
        ax.errorbar(x, y, xerr=[[0], [r["latency_ms_p95"] - x]], fmt="o", color=color, capsize=2, lw=0.8,
                    mfc="white" if bad else color, ms=6)
    ax.set_xscale("log")
    lo, hi = min(xs), max(r["latency_ms_p95"] for r in rows)
    ax.set_xlim(lo / 1.6, hi * 1.6)
    finite = [y for y in ys if not math.isnan(y)]
    if finite:
        span = (max(finite) - min(finite)) or abs(max(finite)) * 0.1 or 1.0
        ax.set_ylim(min(finite) - 0.25 * span, max(finite) + 0.25 * span)
    ax.set(xlabel="batch-1 latency p50 (ms, log scale; bar to p95)", ylabel=rows[0]["metric_name"],
           title="metric vs latency")
    ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color="tab:blue", label="torch"),
               plt.Line2D([], [], marker="o", ls="", color="tab:orange", label="onnxruntime")]
    if any(noisy):
        handles.append(plt.Line2D([], [], marker="o", ls="", color="0.3", mfc="white",
                                  label=f"noisy: p95/p50 > {NOISY_SPREAD}"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    fig.canvas.draw()
    place_labels(ax, xs, ys, [r["name"] + (" \u2020" if bad else "") for r, bad in zip(rows, noisy)])
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_size(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.35 * len(rows)))
    names = [r["name"] for r in rows][::-1]  # first row on top
    sizes = [r["size_mb"] for r in rows][::-1]
    colors = ["tab:orange" if r["runtime"] == "onnxruntime" else "tab:blue" for r in rows][::-1]
    log_scale = max(sizes) > 20 * min(sizes)  # a teacher 200x the int8 student: linear bars hide the small ones
    left = min(sizes) / 2 if log_scale else 0.0
    bars = ax.barh(names, [v - left for v in sizes], left=left, color=colors)
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in sizes], padding=3, fontsize=8)
    if log_scale:
        ax.set_xscale("log")
        ax.set_xlim(left, max(sizes) * 3)
    else:
        ax.set_xlim(0, max(sizes) * 1.18)
    scale = ", log scale" if log_scale else ""
    ax.set(xlabel=f"file size (MB{scale})", title="model size (orange: ONNX)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _primary_loss(run_dir: Path) -> str:
    """The loss part the run's family headlines (FamilySpec.primary_loss), else the total."""
    from r1.artifacts import read_info
    from r1.family import get_family

    return get_family(read_info(run_dir)["family"]).primary_loss or "loss"


def plot_training_curves(rows: list[dict], outputs: dict[str, str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    shown = set()
    for r in rows:
        hist = Path(outputs[r["name"]]) / "history.jsonl"
        if not hist.is_file():
            continue
        recs = [json.loads(line) for line in hist.read_text().splitlines()]
        primary = f"train/{_primary_loss(Path(outputs[r['name']]))}"
        key = primary if any(primary in x for x in recs) else "train/loss"
        pts = [(x["step"], x[key]) for x in recs if key in x]
        if pts:
            ax.plot(*zip(*pts), label=r["name"])
            shown.add(key.split("/", 1)[1])
    ylabel = "training loss" + (f" ({', '.join(sorted(shown))})" if shown - {"loss"} else "")
    ax.set(xlabel="step", ylabel=ylabel, title="training curves", yscale="log")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_report(rows: list[dict], outputs: dict[str, str], out_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")

    plot_metric_vs_latency(rows, out_dir / "metric_vs_latency.png")
    plot_size(rows, out_dir / "size.png")
    plot_training_curves(rows, outputs, out_dir / "training_curves.png")
