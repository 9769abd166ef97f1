"""Sharded training under torchrun (gloo, CPU): `train.parallel=fsdp` (FSDP2) and `zero1`
(ZeroRedundancyOptimizer) give the same per-step losses as one process at the same global batch,
and their checkpoints (full state gathered on rank 0) resume with 1 or 2 processes to the very
weights of an uninterrupted one-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, run_r1, tiny_cls_overrides

# BatchNorm-free, no augmentation, constant LR: the run's trajectory does not depend on how a
# batch is split across processes, nor on the step count a resumed run was first given
OVER = {"model.name": "mlp", "model.flavor": "tiny", "model.in_features": 768, "train.log_every": 1,
        "train.eval_every": 4, "data.augment": False, "sched.name": "constant"}


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def _train(run_dir, procs: int, steps: int, *extra: str, resume: bool = False, port: int = 29541):
    args = ["train", "configs/cls/digits.yaml", *tiny_cls_overrides(run_dir, **OVER, **{"train.max_steps": steps}),
            *extra, "--no-progress", *(["--resume"] if resume else [])]
    if procs == 1:
        proc = run_r1(*args)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", f"--master_port={port}",
               "-m", "r1.cli", *args]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _same_weights(a, b) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 1e-5, k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, 8 steps, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("shard") / "one"
    _train(run_dir, 1, 8)
    return run_dir


@pytest.mark.integration
def test_fsdp_two_procs_equal_one_and_resume_with_two_then_one(reference, tmp_path):
    run_dir = tmp_path / "fsdp"
    _train(run_dir, 2, 4, "train.parallel=fsdp", port=29542)
    assert "fsdp: 0 shard units + root over 2 ranks" in (run_dir / "log.txt").read_text()
    assert _losses(run_dir) == pytest.approx(_losses(reference)[:4], abs=1e-5)
    _train(run_dir, 2, 6, "train.parallel=fsdp", resume=True, port=29543)  # full state sharded again
    _train(run_dir, 1, 8, "train.parallel=fsdp", resume=True)  # one process: trains unsharded
    assert _losses(run_dir) == pytest.approx(_losses(reference), abs=1e-5)
    _same_weights(run_dir, reference)


@pytest.mark.integration
def test_zero1_two_procs_equal_one_then_resume_with_one(reference, tmp_path):
    run_dir = tmp_path / "zero1"
    _train(run_dir, 2, 4, "train.parallel=zero1", port=29544)
    assert "2 procs" in (run_dir / "log.txt").read_text()
    assert _losses(run_dir) == pytest.approx(_losses(reference)[:4], abs=1e-5)
    _train(run_dir, 1, 8, "train.parallel=zero1", resume=True)  # one process: trains unsharded
    assert _losses(run_dir) == pytest.approx(_losses(reference), abs=1e-5)
    _same_weights(run_dir, reference)


@pytest.mark.integration
def test_two_local_nodes_over_loopback(reference, tmp_path):
    """The multi-node launch (`torchrun --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT`, one
    command per machine) with two "machines" on 127.0.0.1, one process each."""
    args = ["-m", "r1.cli", "train", "configs/cls/digits.yaml",
            *tiny_cls_overrides(tmp_path / "nodes", **OVER, **{"train.max_steps": 8}), "train.parallel=fsdp",
            "--no-progress"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
              "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:29546", "--rdzv-id=r1-test-nodes", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(launch, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in outs]
    assert "x 2 procs" in (tmp_path / "nodes" / "log.txt").read_text()
    assert _losses(tmp_path / "nodes") == pytest.approx(_losses(reference), abs=1e-5)
    _same_weights(tmp_path / "nodes", reference)


def test_parallel_modes_resolve():
    from r1.errors import ConfigError
    from r1.train.sharding import resolve_parallel

    assert resolve_parallel("auto", 1) == "none" and resolve_parallel("auto", 2) == "ddp"
    assert resolve_parallel("fsdp", 1) == "none" and resolve_parallel("zero1", 4) == "zero1"
    with pytest.raises(ConfigError, match="train.parallel"):
        resolve_parallel("none", 2)


def test_parallel_is_a_checked_config_field():
    proc = run_r1("train", "configs/cls/digits.yaml", "train.parallel=zero3")
    assert proc.returncode == 2 and "train.parallel" in proc.stderr and "fsdp" in proc.stderr
