"""Start-up time of the `r1` command: wall time of fresh processes, median of N runs each.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--root DIR] [--json FILE]

Measures `r1 --help`, a config error (`r1 train configs/cls/digits.yaml optim.lrr=1`, which must
fail with exit code 2) and `r1 config show configs/cls/digits.yaml`, each as `python -m r1.cli ...`
run from `--root` (default: this checkout; point it at another checkout to compare) with that
directory first on PYTHONPATH. One untimed run per command first writes the .pyc files. Prints a
markdown table with the targets of issue 12 (1.0 s, 1.0 s, 2.0 s).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = [  # (label, argv, expected exit code, target seconds)
    ("r1 --help", ["--help"], 0, 1.0),
    ("r1 train configs/cls/digits.yaml optim.lrr=1", ["train", "configs/cls/digits.yaml", "optim.lrr=1"], 2, 1.0),
    ("r1 config show configs/cls/digits.yaml", ["config", "show", "configs/cls/digits.yaml"], 0, 2.0),
]


def time_once(root: Path, argv: list[str], expect: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "r1.cli", *argv], cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if res.returncode != expect:
        raise SystemExit(f"r1 {' '.join(argv)}: exit code {res.returncode}, expected {expect}\n{res.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command (median reported)")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose r1 package is timed")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs: must be >= 1")
    root = args.root.resolve()
    rows = []
    for label, argv, expect, target in COMMANDS:
        time_once(root, argv, expect)  # untimed: compiles .pyc files, warms the page cache
        times = [time_once(root, argv, expect) for _ in range(args.runs)]
        rows.append({"command": label, "median_s": statistics.median(times), "min_s": min(times),
                     "max_s": max(times), "target_s": target})
    print(f"root: {root}  ({args.runs} runs each, fresh processes, {sys.executable})\n")
    print("| command | median s | min s | max s | target s | ok |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        ok = "yes" if r["median_s"] < r["target_s"] else "NO"
        print(f"| `{r['command']}` | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
              f"{r['target_s']:.1f} | {ok} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
