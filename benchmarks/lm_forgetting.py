"""Forgetting in the embedded three-stage recipe: stage-1 validation loss before and after the
later stages, without protection, with replay, with EWC and with both (same seeds and budgets).

Stage 1 (pretraining on pydoc topics) runs once and saves its Fisher; every variant then runs
stage 2 (stdlib docstrings) and stage 3 (Q/A pairs) from it. The stage-1 validation split is each
later stage's `test` split (data.test_from), so `test/loss` after a stage is the stage-1 loss.

    .venv/bin/python benchmarks/lm_forgetting.py --threads 1 --runs runs/lm_forgetting \\
        --out benchmarks/results/lm_forgetting.json [k=v overrides for every stage]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1.config import load_config  # noqa: E402
from r1.train import fit  # noqa: E402

CONFIGS = ROOT / "configs" / "lm"
VARIANTS = ("none", "replay", "ewc", "replay+ewc")


def _run(config: Path, run_dir: Path, overrides: list[str], reuse: bool) -> dict:
    if not (reuse and (run_dir / "metrics.json").is_file()):
        if run_dir.exists() and not reuse:
            raise SystemExit(f"{run_dir} exists: pass --reuse or remove it")
        t0, c0 = time.perf_counter(), time.process_time()
        fit(load_config(config, [*overrides, f"run.dir={run_dir}"]))
        (run_dir / "bench_time.json").write_text(json.dumps(
            {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}))
    out = json.loads((run_dir / "metrics.json").read_text())
    out.update(json.loads((run_dir / "bench_time.json").read_text()) if (run_dir / "bench_time.json").is_file()
               else {})
    return out


def variant_overrides(variant: str, args, prev: Path) -> list[str]:
    """Replay and/or EWC settings of a later stage whose predecessor run is `prev`."""
    parts = set(variant.split("+"))
    over = [f"data.replay_ratio={args.replay_ratio if 'replay' in parts else 0.0}"]
    if "ewc" in parts:
        over += [f"train.ewc_from={prev}", f"train.ewc_lambda={args.ewc_lambda}", f"train.ewc_samples={args.fisher}"]
    else:  # the shipped configs use EWC: switch it off
        over += ["train.ewc_from=", "train.ewc_samples=0"]
    if "contrastive" in parts:
        over += ["data.replay_labels=true", f"model.contrastive_weight={args.contrastive}"]
    return over


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/lm_forgetting")
    ap.add_argument("--out", default="benchmarks/results/lm_forgetting.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS),
                    help="Any '+' combination of replay, ewc, contrastive; 'none' for neither")
    ap.add_argument("--replay-ratio", type=float, default=0.25)
    ap.add_argument("--ewc-lambda", type=float, default=1000.0)
    ap.add_argument("--fisher", type=int, default=128, help="Samples of each Fisher estimate")
    ap.add_argument("--contrastive", type=float, default=0.1, help="model.contrastive_weight when used")
    ap.add_argument("--no-stage3", action="store_true", help="Stop after stage 2")
    ap.add_argument("--pretrain", default="", help="Use this finished stage-1 run dir (with ewc.safetensors)")
    ap.add_argument("--reuse", action="store_true", help="Keep finished runs (metrics.json) instead of retraining")
    ap.add_argument("overrides", nargs="*", help="k=v for every stage, e.g. train.max_steps=100")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    common = [f"run.threads={args.threads}", *args.overrides]
    pre_dir = Path(args.pretrain) if args.pretrain else runs / "pretrain"
    pre = _run(CONFIGS / "embedded-1-pretrain.yaml", pre_dir, [*common, f"train.ewc_samples={args.fisher}"],
               args.reuse or bool(args.pretrain))
    before = pre["val/loss"]
    res = {"threads": args.threads, "replay_ratio": args.replay_ratio, "ewc_lambda": args.ewc_lambda,
           "fisher_samples": args.fisher, "overrides": args.overrides,
           "pretrain": {"val_loss": before, "wall_s": pre.get("wall_s"), "cpu_s": pre.get("cpu_s")}, "variants": {}}
    for variant in args.variants:
        vdir = runs / variant
        tok = f"data.tokenizer_from={pre_dir}"
        d = _run(CONFIGS / "embedded-2-domain.yaml", vdir / "domain",
                 [*common, tok, f"train.init_from={pre_dir}", *variant_overrides(variant, args, pre_dir)], args.reuse)
        if d["test/tokens"] != pre["val/tokens"]:
            raise SystemExit(f"stage-1 validation split differs: {d['test/tokens']} vs {pre['val/tokens']} tokens")
        row = {"after_domain": d["test/loss"], "domain_val": d["val/loss"],
               "wall_s": d.get("wall_s", 0.0), "cpu_s": d.get("cpu_s", 0.0)}
        if not args.no_stage3:
            i = _run(CONFIGS / "embedded-3-instruct.yaml", vdir / "instruct",
                     [*common, tok, f"train.init_from={vdir / 'domain'}",
                      *variant_overrides(variant, args, vdir / "domain")], args.reuse)
            row.update(after_instruct=i["test/loss"], instruct_val=i["val/loss"], rougeL=i.get("val/rougeL"),
                       wall_s=row["wall_s"] + i.get("wall_s", 0.0), cpu_s=row["cpu_s"] + i.get("cpu_s", 0.0))
        res["variants"][variant] = row
        print(variant, json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(table(res))
    return res


def table(res: dict) -> str:
    before = res["pretrain"]["val_loss"]
    three = any("after_instruct" in r for r in res["variants"].values())
    head = "| variant | stage-1 val loss after stage 2 (forgetting) |"
    head += " after stage 3 (forgetting) | stage-2 val loss | stage-3 val loss | stages 2+3 CPU s |" if three else \
        " stage-2 val loss | stage-2 CPU s |"
    lines = [f"stage-1 validation loss after pretraining: {before:.4f}", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for name, r in res["variants"].items():
        cells = [name, f"{r['after_domain']:.4f} ({r['after_domain'] - before:+.4f})"]
        if three:
            cells += [f"{r['after_instruct']:.4f} ({r['after_instruct'] - before:+.4f})", f"{r['domain_val']:.4f}",
                      f"{r['instruct_val']:.4f}"]
        else:
            cells += [f"{r['domain_val']:.4f}"]
        cells.append(f"{r['cpu_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
