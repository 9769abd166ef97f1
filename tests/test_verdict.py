"""The report's verdict: deployable = within tolerance of the best metric; fastest in onnxruntime wins;
Pareto front over latency/size/metric; int8 slower than its float graph is named."""
from r1.pipeline.verdict import cpu_summary, pareto_front, verdict

CPU = {"model": "Test CPU", "flags": ["avx2"]}


def row(name, runtime, ms, size, metric, **extra):
    return {"name": name, "runtime": runtime, "latency_ms_p50": ms, "size_mb": size, "metric": metric,
            "metric_name": "test/accuracy", **extra}


ROWS = [row("teacher", "torch", 5.0, 40.0, 0.990, onnx_ms_p50=2.0),
        row("student", "torch", 1.0, 1.3, 0.980, onnx_ms_p50=0.10),
        row("onnx", "onnxruntime", 0.09, 1.2, 0.978),
        row("int8", "onnxruntime", 0.14, 0.4, 0.978, float_ms_p50=0.09),
        row("tiny", "onnxruntime", 0.02, 0.1, 0.900)]


def test_picks_the_fastest_variant_within_tolerance_and_compares_in_onnxruntime():
    v = verdict(ROWS, "max", 0.015, CPU)
    assert v["deploy"] == "onnx"  # tiny is faster but 9 points worse; int8 is slower than onnx
    assert "22.22x the speed of `teacher` with both in onnxruntime" in v["line"]
    assert "int8 slower than its float graph: int8 0.64x" in v["line"]
    assert v["line"].endswith("Measured on Test CPU (avx2).")


def test_tolerance_and_mode_change_the_pick():
    assert verdict(ROWS, "max", 0.1, CPU)["deploy"] == "tiny"
    losses = [dict(r, metric=m) for r, m in zip(ROWS, (1.70, 1.71, 1.71, 1.75, 2.0))]
    assert verdict(losses, "min", 0.02, CPU)["deploy"] == "onnx"


def test_pareto_front_drops_dominated_rows():
    front = pareto_front(ROWS, "max")
    assert "teacher" in front  # best metric
    assert "tiny" in front and "int8" in front  # fastest / smallest-but-accurate
    assert "student" in front  # onnx is faster and smaller, but its metric is lower
    dominated = ROWS + [row("worse", "onnxruntime", 0.2, 2.0, 0.97)]
    assert "worse" not in pareto_front(dominated, "max")


def test_no_metric_or_no_onnx_row_says_so():
    assert verdict([row("a", "torch", 1.0, 1.0, None)], "max", 0.01, CPU)["deploy"] is None
    v = verdict([row("a", "torch", 1.0, 1.0, 0.5)], "max", 0.01, CPU)
    assert v["deploy"] is None and "runs in onnxruntime" in v["line"]


def test_cpu_summary_names_the_model_and_known_flags():
    cpu = cpu_summary()
    assert cpu["model"] and all(f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                                      "avx_vnni") for f in cpu["flags"])


def test_baseline_rows_are_never_picked_nor_the_best():
    better_baseline = row("rn", "onnxruntime", 0.01, 0.05, 0.999, baseline=True)
    v = verdict([*ROWS, better_baseline], "max", 0.015, CPU)
    assert v == verdict(ROWS, "max", 0.015, CPU)
