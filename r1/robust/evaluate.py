"""`r1 eval RUN --attack fgsm|pgd --eps E`: accuracy of a trained classifier on clean and attacked images."""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from r1.errors import ConfigError
from r1.robust.attacks import METHODS, PixelModel, attack


def check_attack_options(method: str, eps: float, steps: int, alpha: float = 0.0) -> None:
    """ConfigError (exit 2) naming the option for a bad --attack / --eps / --steps / --alpha."""
    if method not in METHODS:
        raise ConfigError(f"--attack: {method!r} is not allowed; allowed: {', '.join(METHODS)}")
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"--eps: {eps} is outside [0, 1] (pixel units, before normalisation; 0.1 = 25/255)")
    if steps < 1:
        raise ConfigError(f"--steps: {steps} must be >= 1")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha: {alpha} is outside [0, 1] (0: 2.5 * eps / steps)")


def pixel_model(model, meta: dict, where: str) -> PixelModel:
    """The model with its normalisation inside; ConfigError when the data meta has none (not an image model)."""
    pre = meta.get("preprocess") or {}
    if "mean" not in pre or "std" not in pre:
        raise ConfigError(f"{where}: needs an image classifier whose data meta has preprocess mean/std "
                          f"(this one has {sorted(pre) or 'none'})")
    return PixelModel(model, pre["mean"], pre["std"])


def attacked_accuracy(model, loader, meta: dict, method: str, eps: float, steps: int = 10, alpha: float = 0.0,
                      device: str | torch.device = "cpu", seed: int = 0) -> dict[str, float]:
    """Accuracy on `loader`'s images as given and after the attack (each image attacked against its own
    label). Keys: accuracy, attack_accuracy, attack_success (share of correctly classified images the
    attack flips), mean_linf (mean L-inf size of the perturbations, pixel units)."""
    net = pixel_model(model, meta, "--attack").to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    clean = adv = flipped = total = 0
    linf = 0.0
    for batch in loader:
        if batch is None:
            continue
        images, labels = batch
        images, labels = images.to(device), labels.to(device)
        if labels.dim() != 1:
            raise ConfigError("--attack: needs integer class labels (one per image)")
        pixels = net.to_pixels(images.float())
        with torch.no_grad():
            logits = net(pixels)
        if logits.dim() != 2:
            raise ConfigError(f"--attack: needs a classifier returning logits (batch, classes); this model returns "
                              f"shape {tuple(logits.shape)}")
        x_adv = attack(method, net, pixels, labels, eps, steps, alpha, generator=gen)
        with torch.no_grad():
            ok, ok_adv = logits.argmax(1) == labels, net(x_adv).argmax(1) == labels
        clean += int(ok.sum())
        adv += int(ok_adv.sum())
        flipped += int((ok & ~ok_adv).sum())
        total += len(labels)
        linf += float((x_adv - pixels).abs().flatten(1).amax(1).sum())
    if total == 0:
        raise ConfigError("--attack: the split has no images")
    return {"accuracy": clean / total, "attack_accuracy": adv / total,
            "attack_success": flipped / max(clean, 1), "mean_linf": linf / total}


def evaluate_attack(path, split: str, overrides: list[str], method: str, eps: float, steps: int = 10,
                    alpha: float = 0.0, device: str = "cpu") -> dict:
    """`r1 eval PATH --attack METHOD --eps EPS`: rebuild the model's data (as `r1 eval` does) and report
    clean and attacked accuracy on `split`. Torch runtime only (an exported graph has no input gradient)."""
    from r1.config import DataConfig, apply_overrides, from_dict
    from r1.data import build_data
    from r1.inference.runtimes import infer_runtime

    check_attack_options(method, eps, steps, alpha)
    runtime = infer_runtime(path)
    if runtime != "torch":
        raise ConfigError(f"--attack: needs the torch runtime (a run dir or model.safetensors); {path} is a "
                          f"{runtime} artifact, which gives no input gradients")
    bad = [o for o in overrides if not o.startswith(("data.", "model."))]
    if bad:
        raise ConfigError(f"override {bad[0]!r}: only data.* and model.* keys can be changed at evaluation")
    from r1.artifacts import load_model

    fields = apply_overrides({}, [o for o in overrides if o.startswith("model.")]).get("model", {})
    model = load_model(path, device, **fields)
    data_dict = apply_overrides({"data": model.r1_data}, [o for o in overrides if o.startswith("data.")])["data"]
    if not data_dict:
        raise ConfigError(f"{path}: no data config is stored with this model; pass data.name=... (and data.root=...)")
    cfg = from_dict(DataConfig, data_dict, "data")
    bundle = build_data(cfg, seed=0)
    dataset = {"val": bundle.val, "test": bundle.test}[split]
    if dataset is None:
        raise ConfigError(f"--split: this dataset has no {split} split")
    loader = DataLoader(dataset, batch_size=cfg.eval_batch_size, collate_fn=bundle.collate)
    t0 = time.perf_counter()
    scores = attacked_accuracy(model, loader, bundle.meta, method, eps, steps, alpha, device)
    out = {f"{split}/{k}": v for k, v in scores.items()}
    out.update({"attack/method": method, "attack/eps": eps, "attack/steps": steps if method == "pgd" else 1,
                "attack/time_s": round(time.perf_counter() - t0, 2)})
    return out
