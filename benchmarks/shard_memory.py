"""Per-rank parameter + optimizer-state bytes under `train.parallel` = ddp, zero1, fsdp (CPU, gloo).

    .venv/bin/python benchmarks/shard_memory.py [--model r1_lm --flavor small --vocab 65] [--procs 2 4]

For each process count N, launches `torchrun --nproc_per_node=N` on this script; every rank
builds the model, shards it and its AdamW optimizer exactly as the trainer does
(`r1.train.sharding.Sharding`), runs one optimizer step (so that the optimizer state exists) and
counts the bytes of the tensors it holds itself: parameters (an FSDP DTensor's local shard) and
optimizer state (exp_avg, exp_avg_sq, step; under zero1 only its own partition's). The unsharded
total is the same count in one process (P parameter bytes + 2P AdamW moments + the step counters).
Expected share of the total per rank: ddp 1, zero1 (P + 2P/N) / 3P, fsdp 1/N.
Prints a markdown table; writes benchmarks/results/shard_memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

MODES = ("ddp", "zero1", "fsdp")


def tensor_bytes(t: torch.Tensor) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def held_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int]:
    """(parameter bytes, optimizer-state bytes) this process holds."""
    params = sum(tensor_bytes(p) for p in model.parameters())  # parameters() yields tied weights once
    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer: the local optimizer of this rank's share
    state = sum(tensor_bytes(v) for s in inner.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    return params, state


def build(args) -> nn.Module:
    import r1.models
    from r1.registry import build_model

    r1.models.load_all()
    torch.manual_seed(0)
    return build_model(args.model, flavor=args.flavor, num_classes=args.vocab)


def one_step(model: nn.Module, opt: torch.optim.Optimizer, args, rank: int, block: int) -> None:
    g = torch.Generator().manual_seed(rank)
    x = torch.randint(0, args.vocab, (2, block), generator=g)
    y = torch.randint(0, args.vocab, (2, block), generator=g)
    losses = model(x, y)
    sum(losses.values()).backward()
    opt.step()


def worker(args) -> None:
    import torch.distributed as dist

    from r1.config import OptimConfig
    from r1.train.distributed import init_distributed
    from r1.train.optim import build_optimizer
    from r1.train.sharding import Sharding

    torch.set_num_threads(1)
    info = init_distributed("cpu")
    rows = []
    for mode in MODES:
        sharding = Sharding(mode, info, torch.device("cpu"))
        model = build(args)
        model = sharding.shard_model(model, _NoEMA)
        opt = sharding.wrap_optimizer(build_optimizer(model, OptimConfig(name="adamw")))
        net = nn.parallel.DistributedDataParallel(model) if sharding.uses_ddp else model
        one_step(net, opt, args, info.rank, model.block_size)
        params, state = held_bytes(model, opt)
        everyone = [None] * info.world
        dist.all_gather_object(everyone, (params, state))
        rows.append({"mode": mode, "procs": info.world, "per_rank": everyone})
    if info.is_main:
        Path(args.worker).write_text(json.dumps(rows))
    dist.barrier()
    dist.destroy_process_group()


class _NoEMA:  # the part of the run config `Sharding.shard_model` reads
    class train:  # noqa: N801
        ema = False


def unsharded(args) -> tuple[int, int]:
    from r1.config import OptimConfig
    from r1.train.optim import build_optimizer

    torch.set_num_threads(1)
    model = build(args)
    opt = build_optimizer(model, OptimConfig(name="adamw"))
    one_step(model, opt, args, 0, model.block_size)
    return held_bytes(model, opt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="r1_lm")
    ap.add_argument("--flavor", default="small")
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--procs", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)  # set on the ranks torchrun starts
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    P, S = unsharded(args)
    total = P + S
    print(f"{args.model}/{args.flavor}: unsharded parameters {P / 1e6:.3f} MB + AdamW state {S / 1e6:.3f} MB "
          f"= {total / 1e6:.3f} MB (one process)\n")
    print("| mode | procs | per-rank params MB | per-rank optimizer MB | per-rank total MB (max) | share of unsharded | expected |")
    print("|---|---|---|---|---|---|---|")
    results = {"model": f"{args.model}/{args.flavor}", "param_bytes": P, "state_bytes": S, "rows": []}
    for n in args.procs:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_port=29581",
                   __file__, "--model", args.model, "--flavor", args.flavor, "--vocab", str(args.vocab),
                   "--worker", str(out)]
            proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                                  text=True)
            if proc.returncode:
                sys.exit(f"torchrun with {n} processes failed:\n{proc.stderr[-3000:]}")
            rows = json.loads(out.read_text())
        for row in rows:
            params = [p for p, _ in row["per_rank"]]
            states = [s for _, s in row["per_rank"]]
            worst = max(p + s for p, s in row["per_rank"])
            expected = {"ddp": 1.0, "zero1": (P + S / n) / total, "fsdp": 1 / n}[row["mode"]]
            row.update(share=worst / total, expected=expected)
            results["rows"].append(row)
            print(f"| {row['mode']} | {n} | {' / '.join(f'{p / 1e6:.3f}' for p in params)} | "
                  f"{' / '.join(f'{s / 1e6:.3f}' for s in states)} | {worst / 1e6:.3f} | {worst / total:.3f} | "
                  f"{expected:.3f} |")
    out = ROOT / "benchmarks" / "results" / "shard_memory.json"
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
