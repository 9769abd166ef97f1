"""Does distillation help the R1 student? Plain vs KD student on the digits over several seeds.

    .venv/bin/python benchmarks/kd_seeds.py [--seeds 0 1 2] [--out benchmarks/results/kd_seeds.json]

One ResNet teacher per seed, then the R1 MobileNetV3 tiny student trained plainly and with KD from
that teacher, same config, data, budget, seed and threads. Prints a markdown table (mean +- std).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1.config import load_config  # noqa: E402
from r1.train import fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dir", default="runs/bench_kd")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/kd_seeds.json"))
    ap.add_argument("overrides", nargs="*", help="extra k=v for every run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for seed in args.seeds:
        common = [f"run.seed={seed}", f"run.threads={args.threads}", *args.overrides]
        base = Path(args.dir) / f"seed{seed}"
        t0 = time.time()
        teacher = fit(load_config(ROOT / "configs/cls/digits-teacher.yaml", common + [f"run.dir={base / 'teacher'}"]))
        plain = fit(load_config(ROOT / "configs/cls/digits.yaml", common + [f"run.dir={base / 'student'}"]))
        kd = fit(load_config(ROOT / "configs/cls/digits.yaml",
                             common + [f"run.dir={base / 'student_kd'}", f"distill.teacher={base / 'teacher'}"]))
        rows.append({"seed": seed, "teacher": teacher["test/accuracy"], "student": plain["test/accuracy"],
                     "student_kd": kd["test/accuracy"], "seconds": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    summary = {k: {"mean": statistics.mean(r[k] for r in rows), "std": statistics.pstdev(r[k] for r in rows)}
               for k in ("teacher", "student", "student_kd")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary, "overrides": args.overrides}, indent=2))
    print("| model | " + " | ".join(f"seed {r['seed']}" for r in rows) + " | mean +- std |")
    print("|---|" + "---|" * (len(rows) + 1))
    for k in ("teacher", "student", "student_kd"):
        s = summary[k]
        print(f"| {k} | " + " | ".join(f"{r[k]:.4f}" for r in rows) + f" | {s['mean']:.4f} +- {s['std']:.4f} |")


if __name__ == "__main__":
    main()
