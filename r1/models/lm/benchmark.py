"""R1-LM against the plain GPT baseline, measured in one process (`python -m r1.models.lm.benchmark`).

1. Train both configs through the one trainer (or reuse finished run dirs with --reuse).
2. Training throughput: both models step on the same batches, interleaved in chunks, timed by
   process CPU time and wall time (CPU time is robust to other jobs sharing the cores); measured
   twice, with glibc's default heap trimming and then with the heap kept (`keep_heap`).
3. Early exit: validation loss at full depth vs with early exit (the default thresholds, calibrated
   after training, and two fixed ones), blocks run per token, in parallel evaluation and in cached
   generation; the calibration checked out of sample (calibrated on odd, measured on even windows).
4. Generation: 256 new tokens with and without the KV cache.
Writes a JSON file and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from r1.models.lm.early_exit import calibrate_exits, exit_sweep, fit_exit_classifiers
from r1.models.lm.generate import default_exit_threshold, generate


def train_throughput(models: dict, batches: list, chunks: int = 6, steps: int = 5) -> dict:
    """Tokens/s per model (best chunk), stepping AdamW on identical batches, models interleaved."""
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    best = {k: {"cpu": float("inf"), "wall": float("inf")} for k in models}
    tokens = steps * batches[0][0].numel()
    for c in range(chunks + 1):
        for name, m in models.items():
            m.train()
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            for i in range(steps):
                x, y = batches[(c * steps + i) % len(batches)]
                sum(m(x, y).values()).backward()
                opts[name].step()
                opts[name].zero_grad(set_to_none=True)
            if c:  # chunk 0 warms up
                best[name]["cpu"] = min(best[name]["cpu"], time.process_time() - t_cpu)
                best[name]["wall"] = min(best[name]["wall"], time.perf_counter() - t_wall)
    return {k: {"tok_s_cpu": tokens / v["cpu"], "tok_s_wall": tokens / v["wall"]} for k, v in best.items()}


def keep_heap() -> bool:
    """Stop glibc from trimming the heap and from serving large blocks by fresh mmaps (process-wide);
    returns whether that took effect. Interleaved in one process, the model that steps after the
    other's memory peak otherwise pays the page faults of regrowing the heap: measured here (before
    this, default allocator), the GPT baseline stepped with 0 minor faults per step after R1-LM while
    R1-LM took ~1,600-1,900 (each model alone in a process: ~900-1,100 and ~1,100-1,900)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


@torch.no_grad()
def generation_speed(model, prompt: torch.Tensor, n_new: int = 256, exit_threshold=None) -> dict:
    out = {}
    for use_cache in (True, False):
        torch.manual_seed(0)
        stats: dict = {}
        t = time.perf_counter()
        generate(model, prompt, n_new, temperature=1.0, top_k=0, use_cache=use_cache,
                 exit_threshold=exit_threshold, stats=stats)
        dt = time.perf_counter() - t
        key = "cache" if use_cache else "no_cache"
        out[key] = {"s": dt, "tok_s": n_new / dt, "layers_per_token": stats["layers"] / stats["tokens"]}
    out["speedup"] = out["no_cache"]["s"] / out["cache"]["s"]
    return out


def exit_holdout(model, val) -> dict:
    """The exit calibration checked out of sample: a copy calibrated (exit_calibrate budget) on the odd
    validation windows, measured on the even ones."""
    import copy

    from torch.utils.data import DataLoader, Subset
    twin = copy.deepcopy(model)
    cal = calibrate_exits(twin, DataLoader(Subset(val, range(1, len(val), 2)), batch_size=256),
                          model.cfg.exit_calibrate or 0.015)
    even = DataLoader(Subset(val, range(0, len(val), 2)), batch_size=256)
    return {"calibrated_on_odd_windows": cal, "measured_on_even_windows": exit_sweep(twin, even, [cal["thresholds"]])[0]}


def ablate(data_path: str, variants: list[str], steps: int = 400, lr: float = 2e-3, seed: int = 1337,
           val_windows: int = 400) -> dict:
    """Short same-batch training runs of R1-LM variants (e.g. "pos=learned", "exit_weight=0.1"):
    the same data order, schedule (warmup 100, cosine to 0.1 lr) and seed for each; val loss on
    the first `val_windows` validation windows. Used to pick defaults by measurement."""
    import math

    import yaml

    from r1.config import DataConfig, from_dict
    from r1.data import build_data
    from r1.registry import build_model
    data = build_data(from_dict(DataConfig, {"name": "text", "path": data_path, "block_size": 64,
                                             "dedup": "none"}, "data"), 0)
    g = torch.Generator().manual_seed(seed)
    order = torch.randint(0, len(data.train), (steps, 12), generator=g)
    val = [data.val[i] for i in range(min(val_windows, len(data.val)))]
    vx, vy = torch.stack([v[0] for v in val]), torch.stack([v[1] for v in val])
    out = {}
    for spec in variants:
        kw = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in spec.split(",") if p)}
        name = kw.pop("name", "r1_lm")
        torch.manual_seed(seed)
        m = build_model(name, flavor="small", num_classes=data.meta["vocab_size"], **kw)
        opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / 100 if s < 100 else
                                                  0.1 + 0.45 * (1 + math.cos(math.pi * (s - 100) / (steps - 100))))
        t = time.process_time()
        for step in range(steps):
            x, y = (torch.stack(z) for z in zip(*[data.train[int(i)] for i in order[step]]))
            loss = sum(m(x, y).values())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        cpu = time.process_time() - t
        m.eval()
        with torch.no_grad():
            vl = float(F.cross_entropy(m(vx).flatten(0, 1), vy.flatten()))
        out[spec or "default"] = {"val_loss": vl, "cpu_s_per_step": cpu / steps,
                                  "params": sum(p.numel() for p in m.parameters())}
        print(spec or "default", out[spec or "default"], flush=True)
    return out


def _load(run_dir: Path):
    """Rebuild a run's model; weights of the exit classifiers may be missing (runs made before they
    existed): they are then fitted post hoc, which the classifiers' detached inputs allow."""
    from r1.artifacts import load_weights, read_info
    from r1.config import ModelConfig, from_dict
    from r1.registry import build_model
    info = read_info(run_dir)
    model = build_model(from_dict(ModelConfig, info["model"], "model"))
    missing, skipped = load_weights(model, run_dir)
    tied = ("head.weight", "tok_emb.weight")  # stored once by safetensors
    bad = [k for k in missing if not k.startswith("exit_conf.") and k not in tied] + skipped
    if bad:
        raise ValueError(f"{run_dir}: weights do not fit (e.g. {bad[0]})")
    model._exit_conf_missing = any(k.startswith("exit_conf.") for k in missing)
    model.r1_meta = info["meta"]
    return model.eval()


def main(argv=None) -> dict:
    from r1.config import load_config
    from r1.data import build_data
    from r1.train import fit

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="configs/lm/gpt-baseline-shakespeare.yaml")
    ap.add_argument("--r1", default="configs/lm/shakespeare-char.yaml")
    ap.add_argument("--runs", default="runs/lm_vs_baseline", help="Parent directory of the two run dirs")
    ap.add_argument("--reuse", action="store_true", help="Skip training when a run dir already has metrics.json")
    ap.add_argument("--out", default="benchmarks/results/lm_vs_baseline.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fit-exits", action="store_true", help="(Re)fit R1-LM's exit classifiers before measuring")
    ap.add_argument("overrides", nargs="*", help="Overrides for both configs, e.g. data.path=...")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res: dict = {"threads": args.threads}
    models, run_dirs = {}, {}
    for key, path in (("baseline", args.baseline), ("r1", args.r1)):
        run_dir = Path(args.runs) / key
        cfg = load_config(path, [*args.overrides, f"run.dir={run_dir}", f"run.threads={args.threads}"])
        if not (args.reuse and (run_dir / "metrics.json").is_file()):
            fit(cfg)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        models[key] = _load(run_dir)
        run_dirs[key] = run_dir
        res[key] = {"config": path, "params": sum(p.numel() for p in models[key].parameters()),
                    "val_loss": metrics["val/loss"], "train_time_s": metrics.get("train/time_s")}
    data = build_data(load_config(args.r1, args.overrides).data, 0)
    r1 = models["r1"]
    if args.fit_exits or getattr(r1, "_exit_conf_missing", False):
        losses = fit_exit_classifiers(r1, data.train, steps=150)
        res["exit_classifier_fit"] = {"steps": 150, "first_loss": losses[0], "last_loss": losses[-1]}
        r1.calibrate(torch.utils.data.DataLoader(data.val, batch_size=256))  # thresholds of the refitted classifiers
    batches = [tuple(torch.stack(t) for t in zip(*[data.train[i * 997 + j] for j in range(12)])) for i in range(8)]
    fresh = {k: type(m)(m.cfg) for k, m in models.items()}
    res["train_throughput"] = train_throughput(fresh, batches)
    res["tok_s_ratio_cpu"] = res["train_throughput"]["r1"]["tok_s_cpu"] / res["train_throughput"]["baseline"]["tok_s_cpu"]
    res["tok_s_ratio_wall"] = res["train_throughput"]["r1"]["tok_s_wall"] / res["train_throughput"]["baseline"]["tok_s_wall"]
    if keep_heap():  # the same measurement again, without the allocator's heap trimming (see keep_heap)
        fresh = {k: type(m)(m.cfg) for k, m in models.items()}
        tp = res["train_throughput_kept_heap"] = train_throughput(fresh, batches)
        res["tok_s_ratio_cpu_kept_heap"] = tp["r1"]["tok_s_cpu"] / tp["baseline"]["tok_s_cpu"]
    loader = torch.utils.data.DataLoader(data.val, batch_size=256)
    res["exit_holdout"] = exit_holdout(r1, data.val)
    res["exit_thresholds"] = default_exit_threshold(r1)
    res["early_exit"] = exit_sweep(r1, loader, [default_exit_threshold(r1), 0.5, 0.4])
    prompt = data.val[0][0][None, :16]
    res["generation"] = {k: generation_speed(m, prompt, 256) for k, m in models.items()}
    res["generation"]["r1_exit"] = generation_speed(r1, prompt, 256, default_exit_threshold(r1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["ablate"]:  # python -m r1.models.lm.benchmark ablate DATA_PATH STEPS VARIANT...
        torch.set_num_threads(1)
        res = ablate(sys.argv[2], sys.argv[4:], steps=int(sys.argv[3]))
        print(json.dumps(res, indent=2))
    else:
        main()
