"""Measuring: in-process latency/throughput (`latency.py`), HTTP load (`load.py`), tables (`report.py`)."""
from r1.bench.latency import compare_runtimes, measure_latency, percentiles, sweep_batch_sizes

__all__ = ["compare_runtimes", "measure_latency", "percentiles", "sweep_batch_sizes"]
