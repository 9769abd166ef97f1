"""`r1 serve` and `r1 bench` as a user runs them: a server subprocess on a loopback port."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from r1.bench.latency import compare_runtimes, measure_latency
from r1.bench.load import wait_ready
from tests.conftest import ROOT, run_cli, run_r1, unused_port
from tests.serve.helpers import png_bytes


@pytest.mark.integration
def test_serve_subprocess_predict_bench_and_clean_exit(trained_digits, tmp_path):
    port = unused_port()
    proc = subprocess.Popen([sys.executable, "-m", "r1.cli", "serve", str(trained_digits), "--port", str(port),
                             "--max-batch", "8", "--max-queue", "64"], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=90)
        r = httpx.post(url + "/v1/predict", files={"file": ("d.png", png_bytes(), "image/png")})
        assert r.status_code == 200 and r.json()["result"]["label"] in [str(i) for i in range(10)]
        out = tmp_path / "load.json"
        res = run_r1("bench", "serve", url, "--concurrency", "1,4", "--duration", "1", "--max-requests", "200",
                     "--json", str(out), timeout=60)
        assert res.returncode == 0, res.stderr
        rows = json.loads(out.read_text())
        assert [r["concurrency"] for r in rows] == [1, 4]
        for row in rows:
            assert row["ok"] == row["requests"] > 0 and row["requests"] <= 200
            assert 0 < row["p50"] <= row["p95"] <= row["p99"] and row["throughput"] > 0
        assert "| concurrency |" in res.stdout.replace("| server | concurrency |", "| concurrency |")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    log = proc.stdout.read()
    assert rc == 0, log
    assert "Traceback" not in log
    assert f"listening on http://127.0.0.1:{port} (POST /v1/predict; ready when /readyz answers 200" in log


def test_serve_bad_arguments_fail_fast(tmp_path, trained_digits):
    res = run_cli("serve", str(tmp_path / "nope"), "--port", "1")
    assert res.returncode == 2 and "model not found" in res.stderr
    res = run_cli("serve", str(trained_digits), "--max-batch", "0")
    assert res.returncode == 2 and "--max-batch" in res.stderr
    res = run_cli("bench", "serve")
    assert res.returncode == 2 and "usage" in res.stderr


def test_bench_model_cli(trained_digits, tmp_path):
    out = tmp_path / "bench.json"
    res = run_r1("bench", str(trained_digits), "--runtime", "torch", "--batch-sizes", "1,4", "--runs", "20",
                 "--json", str(out))
    assert res.returncode == 0, res.stderr
    rows = json.loads(out.read_text())
    assert [(r["runtime"], r["batch"], r["runs"]) for r in rows] == [("torch", 1, 20), ("torch", 4, 20)]
    assert all(0 < r["p50"] <= r["p95"] and r["throughput"] > 0 for r in rows)
    assert "| torch | 4 |" in res.stdout


def test_compare_runtimes_marks_tensorrt_unavailable(trained_digits):
    rows = compare_runtimes(trained_digits, (2,), runtimes=("torch", "tensorrt"), runs=20, warmup=2)
    assert rows[0]["runtime"] == "torch" and rows[0]["batch"] == 2
    assert rows[1]["runtime"] == "tensorrt" and "GPU" in rows[1]["unavailable"]


def test_measure_latency_numbers():
    stats = measure_latency(lambda b: time.sleep(0.01), [0] * 4, runs=20, warmup=2)
    assert stats["runs"] == 20 and stats["batch"] == 4
    assert 0.009 < stats["p50"] < 0.1 and stats["p50"] <= stats["p95"] <= stats["p99"]
    assert stats["throughput"] == pytest.approx(4 / stats["p50"])
