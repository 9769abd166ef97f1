"""R1-Det against torchvision's detectors on one VOC/COCO dataset, in the same harness.

    .venv/bin/python benchmarks/det_vs_torchvision.py --root ../shared/data/bccd [--reuse]
        [--models r1_det tv_ssdlite320 tv_retinanet_mnv3 tv_fcos_mnv3] [--epochs r1_det=30 tv_fcos_mnv3=12]
        [--set data.augment=basic+mosaic+mixup ...]

Every model is trained by the same config (configs/det/bccd.yaml: data, augmentation, optimizer,
schedule, batch, seed, one thread) from random init, through the same data kind and training
pipeline (`data.augment`: mosaic / mixup included; `--set` changes it for every model alike); only
`model.name` (and the epochs a model can afford within the CPU budget) differ. Then, in one
process and interleaved round by round, batch-1 eager latency (forward + post-processing, 1 thread) on real test images at 320 px.
Prints a markdown table and writes benchmarks/results/det_vs_torchvision.json. `--reuse` takes
finished run dirs (runs/det_bccd_<short>_<flavor>) instead of training them again.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from r1.artifacts import load_model  # noqa: E402
from r1.config import load_config  # noqa: E402
from r1.models.det.flops import count_gflops, count_params  # noqa: E402

SHORT = {"r1_det": "", "tv_ssdlite320": "ssdlite_", "tv_retinanet_mnv3": "retinanet_", "tv_fcos_mnv3": "fcos_"}


def run_dir(name: str, flavor: str) -> Path:
    return ROOT / "runs" / f"det_bccd_{SHORT.get(name, name + '_')}{flavor}"


def train_overrides(name: str, flavor: str, root: str, epochs: int | None, threads: int,
                    common: list[str] = ()) -> list[str]:
    """The recipe's overrides for one model: `common` (data/optim/train keys) is the same for all."""
    overrides = [f"data.root={root}", f"run.dir={run_dir(name, flavor)}", f"run.threads={threads}", *common]
    if name != "r1_det":  # switching model.name resets the model section: keep what the recipe sets
        overrides += [f"model.name={name}", f"model.flavor={flavor}", "model.max_det=150"]
    if epochs:
        overrides.append(f"train.epochs={epochs}")
    return overrides


def train(name: str, flavor: str, root: str, epochs: int | None, threads: int, common: list[str] = ()) -> None:
    from r1.train import fit

    fit(load_config(ROOT / "configs/det/bccd.yaml", train_overrides(name, flavor, root, epochs, threads, common)))


def test_images(model, n: int) -> list[torch.Tensor]:
    """The first `n` test images, preprocessed exactly as at evaluation (letterboxed to 320)."""
    from r1.config import DataConfig, from_dict
    from r1.data import build_data

    bundle = build_data(from_dict(DataConfig, model.r1_data, "data"), seed=0)
    return [bundle.test[i][0].unsqueeze(0) for i in range(min(n, len(bundle.test)))]


@torch.no_grad()
def latencies(models: dict, images: list[torch.Tensor], rounds: int) -> dict[str, list[float]]:
    """Round-robin: every round runs each model once per image, so load drifts hit all alike."""
    times = {k: [] for k in models}
    for m in models.values():  # warm-up
        for x in images[:3]:
            m(x)
    for _ in range(rounds):
        for k, m in models.items():
            for x in images:
                t0 = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="dataset root (VOC layout), e.g. ../shared/data/bccd")
    ap.add_argument("--models", nargs="+", default=list(SHORT))
    ap.add_argument("--flavor", default="small")
    ap.add_argument("--epochs", nargs="*", default=[], help="NAME=EPOCHS; default: the recipe's")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="recipe overrides for every model alike, e.g. data.augment=basic+mosaic+mixup")
    ap.add_argument("--reuse", action="store_true", help="use finished run dirs instead of training")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=10, help="test images timed per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/det_vs_torchvision.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    epochs = dict(e.split("=", 1) for e in args.epochs)
    for name in args.models:
        if not (args.reuse and (run_dir(name, args.flavor) / "metrics.json").is_file()):
            train(name, args.flavor, args.root, int(epochs[name]) if name in epochs else None, args.threads,
                  args.set)
    models = {name: load_model(run_dir(name, args.flavor)) for name in args.models}
    images = test_images(next(iter(models.values())), args.images)
    times = latencies(models, images, args.rounds)
    rows = []
    for name, model in models.items():
        d = run_dir(name, args.flavor)
        m = json.loads((d / "metrics.json").read_text())
        cfg = json.loads((d / "model.json").read_text())
        run_cfg = yaml.safe_load((d / "config.yaml").read_text())
        t = sorted(times[name])
        rows.append({"model": name, "flavor": args.flavor, "params": count_params(model),
                     "gflops_320": round(count_gflops(model, 320), 3),
                     "epochs": run_cfg["train"]["epochs"], "augment": run_cfg["data"].get("augment", "basic"),
                     "train_cpu_min": round(m.get("train/cpu_s", float("nan")) / 60, 1),
                     "train_wall_min": round(m["train/time_s"] / 60, 1),
                     "test_mAP": m["test/mAP"], "test_mAP50": m["test/mAP50"], "test_mAP75": m["test/mAP75"],
                     "latency_ms_p50": 1e3 * statistics.median(t), "latency_ms_p95": 1e3 * t[int(0.95 * (len(t) - 1))],
                     "run_dir": str(d.relative_to(ROOT)), "model_config": cfg.get("model", {})})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "threads": args.threads, "images": len(images),
                                          "rounds": args.rounds}, indent=2))
    ref = next((r for r in rows if r["model"] == "tv_ssdlite320"), None)
    print("| model | params | GFLOPs@320 | epochs | train CPU-min | test mAP | mAP50 | mAP75 | "
          "batch-1 ms p50 | p95 | vs ssdlite |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['latency_ms_p50'] / ref['latency_ms_p50']:.2f}x" if ref else ""
        print(f"| {r['model']} {r['flavor']} | {r['params'] / 1e6:.2f}M | {r['gflops_320']:.2f} | {r['epochs']} | "
              f"{r['train_cpu_min']} | {r['test_mAP']:.3f} | {r['test_mAP50']:.3f} | {r['test_mAP75']:.3f} | "
              f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
