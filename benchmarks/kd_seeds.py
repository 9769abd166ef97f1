"""Does distillation help the R1 student? Plain vs KD student on the digits over several seeds.

    .venv/bin/python benchmarks/kd_seeds.py [--seeds 0 1 2] [--kd T=4,alpha=0.5 T=4,alpha=0.9] [--reuse] [--prune [--prune-final-steps N]]

One ResNet teacher per seed, then the R1 MobileNetV3 tiny student trained plainly and with KD from
that teacher (one run per `--kd` setting), same config, data, budget, seed and threads; the teacher
is built outside the student's random stream, so each KD run is paired with the plain run of its
seed. With `--prune`, the first KD student of each seed is also pruned exactly as the quickstart
recipe's `pruned` stage does (same target, step and fine-tuning), to see how much accuracy
pruning costs across seeds. Prints a markdown table (mean +- std) and writes
benchmarks/results/kd_seeds.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1.config import load_config  # noqa: E402
from r1.pipeline.recipe import load_recipe  # noqa: E402
from r1.pipeline.stages import run_prune  # noqa: E402
from r1.train import fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dir", default="runs/bench_kd")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/kd_seeds.json"))
    ap.add_argument("--kd", nargs="+", default=["T=4,alpha=0.5"], help="KD settings, each T=..,alpha=..")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs (metrics.json present)")
    ap.add_argument("--prune", action="store_true", help="also prune the first KD student (quickstart's stage)")
    ap.add_argument("--prune-final-steps", type=int, help="fine-tuning steps after the last pruning round "
                                                          "(default: the quickstart's)")
    ap.add_argument("overrides", nargs="*", help="extra k=v for every run")
    args = ap.parse_args()
    if args.prune_final_steps is not None and args.prune_final_steps < 0:
        ap.error(f"--prune-final-steps: expected 0 or more, got {args.prune_final_steps}")
    logging.basicConfig(level=logging.WARNING)
    settings = {f"kd {kd}": dict(x.split("=") for x in kd.split(",")) for kd in args.kd}
    keys = ["teacher", "student", *settings, *(["pruned"] if args.prune else [])]
    quickstart = load_recipe(ROOT / "recipes/quickstart.yaml", [f"run.threads={args.threads}", *args.overrides])
    prune_stage = next(s for s in quickstart.stages if s.kind == "prune")
    if args.prune_final_steps is not None:
        prune_stage = dataclasses.replace(prune_stage, final_steps=args.prune_final_steps)

    def run(config: str, overrides: list[str], out: Path) -> dict:
        if args.reuse and (out / "metrics.json").is_file():
            return json.loads((out / "metrics.json").read_text())
        return fit(load_config(ROOT / config, overrides + [f"run.dir={out}"]))

    rows = []
    for seed in args.seeds:
        common = [f"run.seed={seed}", f"run.threads={args.threads}", *args.overrides]
        base = Path(args.dir) / f"seed{seed}"
        t0 = time.time()
        row = {"seed": seed}
        row["teacher"] = run("configs/cls/digits-teacher.yaml", common, base / "teacher")["test/accuracy"]
        row["student"] = run("configs/cls/digits.yaml", common, base / "student")["test/accuracy"]
        for key, kd in settings.items():
            extra = [f"distill.teacher={base / 'teacher'}", f"distill.temperature={kd['T']}",
                     f"distill.alpha={kd['alpha']}"]
            tag = f"student_kd_T{kd['T']}_a{kd['alpha']}"
            row[key] = run("configs/cls/digits.yaml", common + extra, base / tag)["test/accuracy"]
            if args.prune and "pruned" not in row:
                out = base / f"{tag}_pruned_f{prune_stage.final_steps}"
                if not (args.reuse and (out / "prune.json").is_file()):
                    out.mkdir(parents=True, exist_ok=True)
                    run_prune(quickstart, prune_stage, {prune_stage.source: str(base / tag)}, out)
                row["pruned"] = json.loads((out / "metrics.json").read_text())["test/accuracy"]
                row["pruned_params"] = json.loads((out / "prune.json").read_text())["reduction"]
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: {"mean": statistics.mean(r[k] for r in rows), "std": statistics.pstdev(r[k] for r in rows)}
               for k in keys}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary, "overrides": args.overrides}, indent=2))
    print("| model | " + " | ".join(f"seed {r['seed']}" for r in rows) + " | mean +- std |")
    print("|---|" + "---|" * (len(rows) + 1))
    for k in keys:
        s = summary[k]
        print(f"| {k} | " + " | ".join(f"{r[k]:.4f}" for r in rows) + f" | {s['mean']:.4f} +- {s['std']:.4f} |")


if __name__ == "__main__":
    main()
