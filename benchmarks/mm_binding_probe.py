"""How fast does R1-MM learn to bind a question to the object it names? (issue 13, Sort-of-CLEVR)

The CNN is replaced by an oracle that reads the true colour at the centre of each cell of the 5x5 grid
(every object sits inside one cell: `r1.models.mm.data`), through a learned 1x1 projection. The image
tokens are then perfect and only the question -> image binding (the cross-modal attention) is learnt.
Non-relational questions only; the oracle cannot see shapes (a square and a circle share their centre
colour), so the binding is read off the left / top questions ("is the red object on the left?"),
whose answer is the named object's cell (up to the middle column's jitter).

    PYTHONPATH=$PWD taskset -c 1 python benchmarks/mm_binding_probe.py --seeds 0,1,2 \\
        --variant shipped= --variant qk_norm=model.qk_norm=true

Each variant is a name and comma-separated config overrides of configs/mm/sortofclevr.yaml. Prints one
markdown table: validation accuracy per question type at each evaluation step, per seed, and the
seeds' mean at the last step. `--no-oracle` trains the real CNN instead.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from r1.config import load_config
from r1.data import build_data
from r1.registry import build_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/mm/sortofclevr.yaml"
TYPES = ("shape", "left", "top")  # the non-relational question types, qtype 0, 1, 2
CELL = 15  # 75 px / 5 cells


class CellColour(nn.Module):
    """Oracle image encoder: the (normalised) pixel at each cell centre -> `channels` by a 1x1 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, 1)
        self.out_channels = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images[:, :, CELL // 2::CELL, CELL // 2::CELL])


def evaluate(model, loader) -> dict[str, float]:
    model.eval()
    right, seen = torch.zeros(len(TYPES)), torch.zeros(len(TYPES))
    with torch.no_grad():
        for x, y in loader:
            hit = (model(x).argmax(1) == y["answer"]).float()
            for t in range(len(TYPES)):
                sel = y["qtype"] == t
                right[t] += hit[sel].sum()
                seen[t] += sel.sum()
    model.train()
    return {name: float(r / max(n, 1)) for name, r, n in zip(TYPES, right, seen)}


def probe(overrides: list[str], seed: int, steps: int, eval_every: int, oracle: bool) -> list[tuple[int, dict, float]]:
    """Train one variant from `seed`; -> [(step, accuracy per type, CPU seconds so far)]."""
    torch.manual_seed(seed)
    cfg = load_config(CONFIG, ["data.questions=nonrelational", "data.group=10", "data.batch_size=16",
                               "data.val_images=200", f"run.seed={seed}", *overrides])
    data = build_data(cfg.data, 0)
    meta = data.meta
    model = build_model(cfg.model, num_classes=meta["num_classes"], vocab_size=meta["vocab_size"],
                        max_len=meta["max_len"])
    if oracle:
        model.image = CellColour(model.image.out_channels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    train = torch.utils.data.DataLoader(data.train, batch_size=cfg.data.batch_size, shuffle=True,
                                        collate_fn=data.collate, generator=gen)
    val = torch.utils.data.DataLoader(data.val, batch_size=256, collate_fn=data.collate)
    rows, step, t0 = [], 0, time.process_time()
    while step < steps:
        for x, y in train:
            loss = sum(model(x, y).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % eval_every == 0 or step == steps:
                rows.append((step, evaluate(model, val), time.process_time() - t0))
            if step >= steps:
                break
    return rows


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=[key=value,...]")
    return name, [o for o in overrides.split(",") if o]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", type=parse_variant,
                    help="NAME=key=value,key=value (repeatable); default: shipped and qk_norm")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--steps", type=int, default=800, help="training steps of 160 questions")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--no-oracle", dest="oracle", action="store_false", help="train the real CNN")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    variants = args.variant or [("shipped", []), ("qk_norm", ["model.qk_norm=true"])]
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| variant | seed | step | shape | left | top | CPU-s |")
    print("|---|---|---|---|---|---|---|")
    last: dict[str, list[dict]] = {}
    for name, overrides in variants:
        for seed in seeds:
            for step, acc, cpu in probe(overrides, seed, args.steps, args.eval_every, args.oracle):
                print(f"| {name} | {seed} | {step} | {acc['shape']:.3f} | {acc['left']:.3f} | {acc['top']:.3f} "
                      f"| {cpu:.0f} |", flush=True)
            last.setdefault(name, []).append(acc)
    print(f"\nmean over seeds {args.seeds} at step {args.steps}:")
    for name, accs in last.items():
        print(f"- {name}: left {statistics.mean(a['left'] for a in accs):.3f}, "
              f"top {statistics.mean(a['top'] for a in accs):.3f}")


if __name__ == "__main__":
    main()
