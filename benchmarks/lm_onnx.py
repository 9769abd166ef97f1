"""A trained language model in torch vs onnxruntime fp32 vs onnxruntime int8: generation tokens/s with
the KV cache (batch 1 and 8, greedy) and validation loss of each, interleaved, medians.

    taskset -c 1 .venv/bin/python benchmarks/lm_onnx.py RUN_DIR [--new-tokens 192] [--reps 7]
    taskset -c 1 .venv/bin/python benchmarks/lm_onnx.py RUN_DIR --flavor medium   # speed only, random weights

torch runs every layer (exit_threshold None) and, for R1-LM, also with its default early exit; the
ONNX graph always runs every layer. int8 variants: `dynamic` (quantize_dynamic: MatMulInteger, fused
into DynamicQuantizeMatMul; per-channel and per-tensor weights) and `nbits` (MatMulNBits, 8-bit
blockwise weights, int8 compute). Validation loss: mean next-token cross-entropy over the first
--val-windows windows of the run's validation split. Writes benchmarks/results/lm_onnx.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import r1  # noqa: E402
from r1.models.lm.export import quantize_lm  # noqa: E402
from r1.models.lm.generate import default_exit_threshold, generate_stream  # noqa: E402
from r1.models.lm.onnx_predictor import OnnxTextPredictor  # noqa: E402

INT8 = {"int8-dyn-pc": {"method": "dynamic", "per_channel": True},
        "int8-dyn-pt": {"method": "dynamic", "per_channel": False},
        "int8-nbits": {"method": "nbits"}}


def val_windows(run: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from r1.artifacts import read_info
    from r1.config import DataConfig, from_dict
    from r1.data import build_data

    cfg = from_dict(DataConfig, read_info(run)["data"], "data")
    val = build_data(cfg, seed=0).val
    step = max(1, len(val) // n)
    items = [val[i] for i in range(0, step * n, step)][:n]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def val_loss(logits_fn, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> float:
    total, count = 0.0, 0
    for i in range(0, len(x), batch):
        logits = torch.as_tensor(logits_fn(x[i:i + batch]))
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), y[i:i + batch].flatten(), reduction="sum"))
        count += y[i:i + batch].numel()
    return total / count


def random_run(run: Path, flavor: str) -> Path:
    """The run's model rebuilt at `flavor` with random weights (same config otherwise), saved to a temporary run dir."""
    from r1.artifacts import save_artifact
    from r1.config import to_dict
    from r1.registry import build_model

    base = r1.load_model(run)
    cfg = to_dict(base.r1_config)
    keep = {k: cfg[k] for k in ("n_kv_head", "pos", "mlp", "exit_weight") if k in cfg}
    torch.manual_seed(0)
    model = build_model(cfg["name"], flavor=flavor, num_classes=base.head.weight.shape[0], **keep).eval()
    out = Path(tempfile.mkdtemp(prefix=f"lm-{flavor}-")) / "run"
    save_artifact(model, out, base.r1_meta)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--new-tokens", type=int, default=192)
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--val-windows", type=int, default=512)
    ap.add_argument("--flavor", default="", help="Speed only: the run's model at this flavor, random weights")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out = args.out or ROOT / f"benchmarks/results/lm_onnx{'-' + args.flavor if args.flavor else ''}.json"
    if args.flavor:
        args.run = random_run(args.run, args.flavor)
    model = r1.load_model(args.run).eval()
    exit_thr = default_exit_threshold(model)
    onnx = {"onnx-fp32": OnnxTextPredictor.load(args.run, "onnx", threads=1)}
    tmp = Path(tempfile.mkdtemp(prefix="lm-onnx-"))
    for name, kw in INT8.items():
        quantize_lm(onnx["onnx-fp32"].path, tmp / f"{name}.onnx", **kw)
        onnx[name] = OnnxTextPredictor.load(tmp / f"{name}.onnx", "onnx", threads=1)
    sizes = {name: p.path.stat().st_size for name, p in onnx.items()}

    losses = {}
    if args.flavor:  # random weights: no loss worth reporting; prompts of random ids
        x = torch.randint(0, model.head.weight.shape[0], (8, args.prompt_tokens), generator=torch.Generator())
    else:
        x, y = val_windows(args.run, args.val_windows)
        with torch.inference_mode():
            losses = {"torch": val_loss(lambda b: model(b), x, y)}
            if exit_thr is not None:
                losses["torch-exit"] = val_loss(lambda b: model(b, exit_threshold=exit_thr), x, y)
            for name, p in onnx.items():
                losses[name] = val_loss(lambda b, p=p: p.step(b.numpy(), None)[0], x, y)

    def torch_gen(thr):
        def run(ids):
            for _ in generate_stream(model, torch.from_numpy(ids), args.new_tokens, temperature=0.0,
                                     use_cache=True, exit_threshold=thr):
                pass
        return run

    def onnx_gen(p):
        def run(ids):
            for _ in p.token_batches(ids, args.new_tokens):
                pass
        return run

    runners = {"torch": torch_gen(None)}
    if exit_thr is not None:
        runners["torch-exit"] = torch_gen(exit_thr)
    runners.update({name: onnx_gen(p) for name, p in onnx.items()})
    batches = [int(b) for b in args.batches.split(",")]
    times = {(n, b): [] for n in runners for b in batches}
    with torch.inference_mode():
        for rep in range(args.reps + 1):  # rep 0 warms up
            for b in batches:
                ids = x[:b, :args.prompt_tokens].numpy()
                for name, run in runners.items():
                    t0 = time.perf_counter()
                    run(ids)
                    if rep:
                        times[(name, b)].append(time.perf_counter() - t0)
    rows = []
    for name in runners:
        row = {"variant": name, "val_loss": round(losses.get(name, float("nan")), 4), "size_bytes": sizes.get(name)}
        for b in batches:
            row[f"tok_s_b{b}"] = round(b * args.new_tokens / statistics.median(times[(name, b)]), 1)
        rows.append(row)
    base = next(r for r in rows if r["variant"] == "onnx-fp32")
    print(f"{args.run}: {args.new_tokens} new tokens after {args.prompt_tokens}-token prompts, greedy, KV cache, "
          f"1 thread, medians of {args.reps} interleaved reps; val loss over {len(x)} windows")
    print("| variant | val loss | " + " | ".join(f"tok/s b{b} | vs ort fp32 b{b}" for b in batches) + " | file |")
    print("|---|---|" + "---|---|" * len(batches) + "---|")
    for r in rows:
        cells = " | ".join(f"{r[f'tok_s_b{b}']:.0f} | {r[f'tok_s_b{b}'] / base[f'tok_s_b{b}']:.2f}x" for b in batches)
        size = f"{r['size_bytes'] / 1e6:.2f} MB" if r["size_bytes"] else "-"
        print(f"| {r['variant']} | {r['val_loss']:.4f} | {cells} | {size} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run), "new_tokens": args.new_tokens, "reps": args.reps,
                                    "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
