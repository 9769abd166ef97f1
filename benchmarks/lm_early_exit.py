"""R1-LM early exit in wall time: generation tokens/s (batch 1, KV cache, greedy) at full depth vs with
the calibrated exits, interleaved, medians; validation loss of both.

    taskset -c 1 .venv/bin/python benchmarks/lm_early_exit.py RUN_DIR [--criterion state] [--reps 7]

With `--criterion state` (default) a run trained with another exit criterion gets state-only exit
classifiers fitted post hoc (`fit_exit_classifiers`: the language model frozen, the classifiers read
detached states, so this is the classifier joint training would give). The thresholds are then
calibrated (`calibrate_exits`) with the loss budget, the cost model (exit check / skipped block's
keys-values, in blocks) and the confidence given, on --calibrate-batches validation batches of 256 windows
evenly spaced over the split. Validation loss: mean next-token cross-entropy over --val-windows evenly
spaced validation windows (0: all), and over the held-out windows (every validation window the calibration
did not read) (parallel evaluation, the exits' rule included). Writes benchmarks/results/lm_early_exit_<run>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1.models.lm.early_exit import calibrate_exits, fit_exit_classifiers  # noqa: E402
from r1.models.lm.generate import generate  # noqa: E402


def val_windows(data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n evenly spaced validation windows (inputs, targets); n = 0: all of them."""
    n = n or len(data.val)
    step = max(1, len(data.val) // n)
    return windows(data, list(range(0, step * n, step))[:n])


def windows(data, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    items = [data.val[i] for i in index]
    return torch.stack([torch.as_tensor(a) for a, _ in items]), torch.stack([torch.as_tensor(b) for _, b in items])


def held_out(n_val: int, batches: int, batch_size: int = 256) -> list[int]:
    """The validation windows `spread_batches` does not pick for `batches` batches."""
    n = batches * batch_size
    if n >= n_val:
        return []
    picked = {i * n_val // n for i in range(n)}
    return [i for i in range(n_val) if i not in picked]


def load(run: Path, criterion: str, fit_steps: int):
    """The run's R1-LM with `criterion`; its exit classifiers refitted when the run used another one."""
    from safetensors.torch import load_file

    from r1.artifacts import read_info
    from r1.config import DataConfig, ModelConfig, from_dict
    from r1.data import build_data
    from r1.registry import build_model

    info = read_info(run)
    cfg = dict(info["model"])
    refit = cfg.get("exit_criterion", "learned") != criterion
    cfg.update(exit_criterion=criterion, exit_thresholds=[])
    torch.manual_seed(0)  # the refitted classifiers start from the same weights every time
    model = build_model(from_dict(ModelConfig, cfg, "model"))
    state = load_file(str(run / "model.safetensors"))
    if refit:
        state = {k: v for k, v in state.items() if not k.startswith("exit_conf.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in [*missing, *unexpected] if k != "tok_emb.weight" and not (refit and k.startswith("exit_conf."))]
    if bad:
        raise SystemExit(f"{run}: weights do not fit the model (e.g. {bad[0]})")
    data = build_data(from_dict(DataConfig, info["data"], "data"), seed=0)
    fit = {}
    if refit:
        t = time.perf_counter()
        losses = fit_exit_classifiers(model, data.train, steps=fit_steps)
        fit = {"steps": fit_steps, "first_loss": losses[0], "last_loss": losses[-1], "s": time.perf_counter() - t}
    return model.eval(), data, fit


@torch.no_grad()
def val_loss(model, x, y, threshold, batch: int = 64) -> tuple[float, float]:
    nll = blocks = 0.0
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch], exit_threshold=threshold)
        nll += float(F.cross_entropy(logits.flatten(0, 1).float(), y[i:i + batch].flatten(), reduction="sum"))
        blocks += float(model.last_layers_run.sum())
    return nll / y.numel(), blocks / y.numel()


def speed(model, prompt, n_new: int, threshold) -> dict:
    stats: dict = {}
    wall, cpu = time.perf_counter(), time.process_time()
    generate(model, prompt, n_new, temperature=0.0, exit_threshold=threshold, stats=stats)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"tok_s": n_new / wall, "tok_s_cpu": n_new / cpu, "blocks": stats["layers"] / stats["tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--criterion", default="state", choices=("state", "learned", "maxprob"))
    ap.add_argument("--fit-steps", type=int, default=300)
    ap.add_argument("--budget", type=float, default=0.02)
    ap.add_argument("--check", type=float, default=None, help="Exit check cost in blocks (default: the model's)")
    ap.add_argument("--fill", type=float, default=None, help="Skipped block's keys/values in blocks (the model's)")
    ap.add_argument("--calibrate-batches", type=int, default=16)
    ap.add_argument("--confidence", type=float, default=0.95, help="Calibration: the budget holds at this one-sided "
                                                                    "confidence (0.5: the measured rise alone)")
    ap.add_argument("--val-windows", type=int, default=0, help="0: the whole validation split")
    ap.add_argument("--new-tokens", type=int, default=192)
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, data, fit = load(args.run, args.criterion, args.fit_steps)
    check = model.cfg.exit_check_cost if args.check is None else args.check
    fill = model.cfg.exit_fill_cost if args.fill is None else args.fill
    t = time.perf_counter()
    loader = torch.utils.data.DataLoader(data.val, batch_size=256)
    cal = calibrate_exits(model, loader, args.budget, args.calibrate_batches, check=check, fill=fill,
                          confidence=args.confidence)
    cal["s"] = time.perf_counter() - t
    thr = cal["thresholds"]
    x, y = val_windows(data, args.val_windows)
    full_loss, _ = val_loss(model, x, y, None)
    exit_loss, exit_blocks = val_loss(model, x, y, thr)
    hold = held_out(len(data.val), args.calibrate_batches)
    if hold:
        hx, hy = windows(data, hold)
        hold_full, hold_exit = val_loss(model, hx, hy, None)[0], val_loss(model, hx, hy, thr)[0]
    step = len(data.val) // args.prompts
    prompts = [data.val[i * step][0][None, :args.prompt_tokens] for i in range(args.prompts)]
    for p in prompts:  # warm-up
        speed(model, p, 16, None), speed(model, p, 16, thr)
    rows: dict[str, list] = {"full": [], "exit": []}
    for r in range(args.reps):
        for name, threshold in (("full", None), ("exit", thr)) if r % 2 == 0 else (("exit", thr), ("full", None)):
            rows[name].append([speed(model, p, args.new_tokens, threshold) for p in prompts])

    def med(name, key):
        return statistics.median(sum(s[key] for s in rep) / len(rep) for rep in rows[name])

    res = {"run": str(args.run), "criterion": args.criterion, "params": sum(p.numel() for p in model.parameters()),
           "n_layer": model.n_layer, "n_embd": model.cfg.n_embd, "classifier_fit": fit, "calibration": cal,
           "cost_model": {"check": check, "fill": fill}, "val_windows": args.val_windows,
           "val_loss_full": full_loss, "val_loss_exit": exit_loss, "loss_up": exit_loss - full_loss,
           "blocks_per_token_val": exit_blocks, "held_out_windows": len(hold),
           "held_out_loss_up": hold_exit - hold_full if hold else None, "blocks_per_token_gen": med("exit", "blocks"),
           "tok_s_full": med("full", "tok_s"), "tok_s_exit": med("exit", "tok_s"),
           "tok_s_cpu_full": med("full", "tok_s_cpu"), "tok_s_cpu_exit": med("exit", "tok_s_cpu"),
           "reps": args.reps, "new_tokens": args.new_tokens, "prompts": args.prompts, "threads": args.threads}
    res["speedup_wall"] = res["tok_s_exit"] / res["tok_s_full"]
    res["speedup_cpu"] = res["tok_s_cpu_exit"] / res["tok_s_cpu_full"]
    out = args.out or ROOT / "benchmarks" / "results" / f"lm_early_exit_{args.run.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print(f"| {args.run.name} | {res['params'] / 1e6:.2f}M | {thr} | {full_loss:.4f} | {exit_loss:.4f} "
          f"(+{res['loss_up']:.4f}) | {res['held_out_loss_up'] or float('nan'):+.4f} | "
          f"{model.n_layer / res['blocks_per_token_gen']:.2f}x | {res['tok_s_full']:.0f} | "
          f"{res['tok_s_exit']:.0f} | **{res['speedup_wall']:.2f}x** | {res['speedup_cpu']:.2f}x |")


if __name__ == "__main__":
    main()
