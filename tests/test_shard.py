"""Sharded training under torchrun (gloo, CPU): `train.parallel=fsdp` (FSDP2) and `zero1`
(ZeroRedundancyOptimizer) give the same per-step losses as one process at the same global batch,
and their checkpoints (full state gathered on rank 0) resume with 1 or 2 processes to the very
weights of an uninterrupted one-process run."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, run_r1, tiny_cls_overrides, torchrun, unused_port

# BatchNorm-free, no augmentation, constant LR: the run's trajectory does not depend on how a
# batch is split across processes, nor on the step count a resumed run was first given
OVER = {"model.name": "mlp", "model.flavor": "tiny", "model.in_features": 768, "train.log_every": 1,
        "train.eval_every": 4, "data.augment": False, "sched.name": "constant"}


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def _train(run_dir, procs: int, steps: int, *extra: str, resume: bool = False):
    args = ["train", "configs/cls/digits.yaml", *tiny_cls_overrides(run_dir, **OVER, **{"train.max_steps": steps}),
            *extra, "--no-progress", *(["--resume"] if resume else [])]
    if procs == 1:
        proc = run_r1(*args)
    else:
        proc = subprocess.run(torchrun(procs, *args), cwd=ROOT, capture_output=True, text=True, timeout=300,
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
    _train(run_dir, 2, 4, "train.parallel=fsdp")
    assert "fsdp: 0 shard units + root over 2 ranks" in (run_dir / "log.txt").read_text()
    assert _losses(run_dir) == pytest.approx(_losses(reference)[:4], abs=1e-5)
    _train(run_dir, 2, 6, "train.parallel=fsdp", resume=True)  # full state sharded again
    _train(run_dir, 1, 8, "train.parallel=fsdp", resume=True)  # one process: trains unsharded
    assert _losses(run_dir) == pytest.approx(_losses(reference), abs=1e-5)
    _same_weights(run_dir, reference)


@pytest.mark.integration
def test_zero1_two_procs_equal_one_then_resume_with_one(reference, tmp_path):
    run_dir = tmp_path / "zero1"
    _train(run_dir, 2, 4, "train.parallel=zero1")
    assert "2 procs" in (run_dir / "log.txt").read_text()
    assert _losses(run_dir) == pytest.approx(_losses(reference)[:4], abs=1e-5)
    _train(run_dir, 1, 8, "train.parallel=zero1", resume=True)  # one process: trains unsharded
    assert _losses(run_dir) == pytest.approx(_losses(reference), abs=1e-5)
    _same_weights(run_dir, reference)


@pytest.mark.integration
def test_lm_sharded_per_block_on_two_local_nodes_over_loopback(tmp_path):
    """R1-LM (tiny) under fsdp, one shard unit per block, launched as on two machines
    (`torchrun --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT`, one command per machine)
    with both "machines" on 127.0.0.1, one process each: the losses of one process."""
    (tmp_path / "a.txt").write_text("".join(chr(97 + (i * 7 + i // 13) % 26) for i in range(6000)))
    over = ["model.name=r1_lm", "model.flavor=tiny", "data.name=text", f"data.path={tmp_path / 'a.txt'}",
            "data.block_size=32", "data.batch_size=8", "data.dedup=none", f"data.cache_dir={tmp_path / 'cache'}",
            "train.max_steps=4", "train.eval_every=4", "train.log_every=1", "run.threads=1", "train.amp=off"]
    args = ["train", "configs/lm/shakespeare-char.yaml", *over, "--no-progress"]
    one = run_r1(*args, f"run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    # a rendezvous of its own: with a fixed port and id, the nodes of two copies of this test running at
    # once on the machine (another checkout's suite) join one rendezvous, and its host leaving kills the rest
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
              f"--rdzv-endpoint=127.0.0.1:{unused_port()}", f"--rdzv-id=r1-test-nodes-{uuid.uuid4().hex[:12]}",
              "-m", "r1.cli", *args, f"run.dir={tmp_path / 'nodes'}", "train.parallel=fsdp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"node{i}.log" for i in range(2)]  # files, not pipes: one node's full pipe cannot stall both
    with contextlib.ExitStack() as files:
        nodes = [subprocess.Popen(launch, cwd=ROOT, env=env, stdout=files.enter_context(log.open("w")),
                                  stderr=subprocess.STDOUT) for log in logs]
        try:
            for node in nodes:
                node.wait(timeout=300)
        finally:
            for node in nodes:
                if node.poll() is None:
                    node.kill()
    assert all(node.returncode == 0 for node in nodes), [log.read_text()[-2000:] for log in logs]
    log = (tmp_path / "nodes" / "log.txt").read_text()
    assert "x 2 procs" in log and "fsdp: 4 shard units + root over 2 ranks" in log  # tiny: 3 blocks, 1 fusion
    assert _losses(tmp_path / "nodes") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
    _same_weights(tmp_path / "nodes", tmp_path / "one")


def test_shard_units_are_blocks_and_stages():
    import r1.models
    from r1.registry import build_model
    from r1.train.sharding import shard_units

    r1.models.load_all()

    def units(name, **kw):
        model = build_model(name, flavor="tiny", num_classes=10, **kw)
        names = {id(m): n for n, m in model.named_modules()}
        return [names[id(u)] for u in shard_units(model)]

    assert units("r1_lm", fusion=False) == ["blocks.0", "blocks.1", "blocks.2"]  # exit heads (ModuleDict) stay at the root
    assert units("resnet") == ["net.layer1", "net.layer2", "net.layer3", "net.layer4"]
    assert units("mlp") == []  # one Sequential holding everything: the root is the only unit


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
