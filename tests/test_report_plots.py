"""The pipeline report: noisy latency rows flagged, plot labels that do not collide, readable sizes."""
from __future__ import annotations

import itertools

from r1.bench.report import latency_table
from r1.pipeline.plots import place_labels, plot_report
from r1.pipeline.report import markdown

NAMES = ["teacher", "student", "student_kd", "onnx_student", "int8_student", "pruned", "onnx", "int8", "int8_qat"]


def _rows():
    p50 = [9.1, 1.9, 1.95, 0.21, 0.17, 1.7, 0.19, 0.16, 0.18]
    p95 = [10.2, 2.2, 4.0, 0.25, 0.19, 1.9, 0.22, 0.3, 0.2]  # student_kd and int8: p95 > 1.5 x p50
    metric = [0.985, 0.972, 0.975, 0.975, 0.974, 0.97, 0.97, 0.969, 0.971]
    size = [44.7, 1.2, 1.2, 1.15, 0.33, 0.7, 0.68, 0.2, 0.22]
    return [{"name": n, "runtime": "onnxruntime" if ("onnx" in n or "int8" in n) else "torch", "params": 1,
             "size_mb": s, "latency_ms_p50": a, "latency_ms_p95": b, "metric_name": "test/accuracy", "metric": m}
            for n, a, b, m, s in zip(NAMES, p50, p95, metric, size)]


def test_noisy_latency_rows_are_marked_with_a_footnote():
    md = markdown({"rows": _rows(), "threads": 1, "runs": 30, "torch": "2", "cpu": "AVX2"})
    assert "| student_kd | torch | 1 | 1.2 | 1.95 | 4 \u2020 |" in md and "| 0.16 | 0.3 \u2020 |" in md
    assert "| student | torch | 1 | 1.2 | 1.9 | 2.2 |" in md and "(batch-1 p50, noisy)" in md
    assert md.rstrip().endswith("before comparing it.") and "p95/p50 latency spread above 1.5" in md
    quiet = markdown({"rows": _rows()[:2], "threads": 1, "runs": 30, "torch": "2", "cpu": "AVX2"})
    assert "\u2020" not in quiet
    table = latency_table([{"runtime": "torch", "batch": 1, "p50": 0.001, "p95": 0.002, "mean": 0.0012,
                            "throughput": 800.0, "runs": 30}])
    assert "| torch | 1 | 1 | 2 \u2020 |" in table and "p95/p50 latency spread" in table


def test_plot_labels_do_not_overlap_and_plots_are_written(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    rows = _rows()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs, ys = [r["latency_ms_p50"] for r in rows], [r["metric"] for r in rows]
    ax.scatter(xs, ys)
    ax.set_xscale("log")
    ax.set_xlim(0.1, 16)
    ax.set_ylim(0.965, 0.99)
    fig.canvas.draw()
    texts = place_labels(ax, xs, ys, NAMES)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in texts]  # the words, not their leader lines
    assert [t.get_text() for t in texts] == NAMES
    assert not [(a, b) for (a, ba), (b, bb) in itertools.combinations(zip(NAMES, boxes), 2) if ba.overlaps(bb)]
    plt.close(fig)
    plot_report(rows, {n: str(tmp_path / "none") for n in NAMES}, tmp_path)
    for png in ("metric_vs_latency.png", "size.png", "training_curves.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_baseline_rows_are_marked_in_their_name_not_in_a_column():
    rows = [*_rows()[:2], {**_rows()[1], "name": "rn", "baseline": True}]
    md = markdown({"rows": rows, "threads": 1, "runs": 30, "torch": "2", "cpu": "AVX2"})
    assert "| rn (baseline) |" in md and "baseline |" not in md.splitlines()[0]
