"""R1-MM ablations on Sort-of-CLEVR (issue 13, "Ablations"): the recipe's config at one reduced, fixed
budget per row and the same seed; the full model (every component on), one component off per row,
and the CNN+MLP / CNN+RN baselines on the same data stream. Prints one markdown table (deltas against
the full model).

    PYTHONPATH=$PWD taskset -c 1 python benchmarks/mm_ablation.py --steps 1000 --out runs/mm_ablation

Each row is `r1 train configs/mm/sortofclevr.yaml` in its own process (run dir OUT/ROW; a row whose
metrics.json exists is read, not rerun). CPU seconds are the run's `train/cpu_s`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/mm/sortofclevr.yaml"

# the full model: the recipe's r1_mm (deformable late block, gated fusion, top-k experts) plus the
# options the recipe leaves off: alignment weighting, EDA on half the training questions, curriculum
FULL = ["model.align_weighting=true", "data.eda=0.5", "curriculum.schedule=sqrt"]
ROWS = {
    "full": [],
    "no_deform": ["model.deform_layers=0"],
    "no_gate": ["model.fusion=sum"],
    "no_experts": ["model.ffn=dense"],
    "no_align_weighting": ["model.align_weighting=false"],
    "no_eda": ["data.eda=0"],
    "no_curriculum": ["curriculum.schedule=none"],
    "plus_qk_norm": ["model.qk_norm=true"],  # an addition, not an ablation: QK-norm cross-attention
    "cnn_mlp": ["model.name=mm_cnn_mlp"],
    "cnn_rn": ["model.name=mm_cnn_rn"],
}
BASELINE_ONLY_MODEL_KEYS = ("model.align_weighting",)  # r1_mm keys the baselines do not have


def row_overrides(row: str, steps: int, seed: int, run_dir: Path) -> list[str]:
    full = list(FULL)
    if ROWS[row] and ROWS[row][0].startswith("model.name="):
        full = [o for o in full if not o.startswith(BASELINE_ONLY_MODEL_KEYS)]
    return [*full, *ROWS[row], f"run.dir={run_dir}", f"run.seed={seed}", "run.threads=1",
            f"train.max_steps={steps}", "train.eval_every=0"]


def run_row(row: str, args) -> dict:
    run_dir = Path(args.out) / row
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "r1.cli", "train", str(CONFIG), *row_overrides(row, args.steps, args.seed, run_dir)]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(metrics.read_text())


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="training steps per row (160 questions each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/mm_ablation", help="folder of the rows' run dirs")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown {unknown}; allowed: {', '.join(ROWS)}")
    results = {}
    for row in rows:
        results[row] = run_row(row, args)
        m = results[row]
        print(f"{row}: test {pct(m['test/accuracy'])} cpu_s {m['train/cpu_s']:.0f}", file=sys.stderr, flush=True)
    ref = results.get("full")
    print("| row | overrides | test acc % | delta | relational | non-relational | count MAE | CPU-s |")
    print("|---|---|---|---|---|---|---|---|")
    for row, m in results.items():
        delta = f"{100 * (m['test/accuracy'] - ref['test/accuracy']):+.1f}" if ref and row != "full" else "-"
        print(f"| {row} | {' '.join(ROWS[row]) or ' '.join(FULL)} | {pct(m['test/accuracy'])} | {delta} "
              f"| {pct(m['test/accuracy_relational'])} | {pct(m['test/accuracy_nonrelational'])} "
              f"| {m['test/count_mae']:.3f} | {m['train/cpu_s']:.0f} |")


if __name__ == "__main__":
    main()
