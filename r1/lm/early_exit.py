"""Early-exit tools for R1-LM: fit the exit classifiers of a trained model, calibrate the default
per-head thresholds, sweep thresholds.

The exit classifiers read detached features, so fitting them after training (the language model
frozen) gives the same kind of classifier as joint training; it also upgrades models trained
before the classifiers existed.
"""
from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


class Progress:
    """`exit calibration: <phase> 20/64 batches | elapsed 12s` at most every `every` seconds, so the
    ~minute of post-training calibration is not silent outside a terminal."""

    def __init__(self, every: float = 5.0):
        self.every, self.t0 = every, time.perf_counter()
        self.last = self.t0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            log.info("exit calibration: %s, %d/%d batches | elapsed %.0fs", phase, done, total, now - self.t0)


GRID = [1.01] + [round(1.0 - 0.025 * i, 3) for i in range(1, 40)]  # thresholds tried, never-exit first


def fit_exit_classifiers(model, dataset, steps: int = 200, batch_size: int = 32, lr: float = 3e-3,
                         seed: int = 0) -> list[float]:
    """Train only `model.exit_conf` on random windows of `dataset`; returns the loss per step."""
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("exit_conf."))
    opt = torch.optim.AdamW(model.exit_conf.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.eval()
    losses = []
    try:
        for _ in range(steps):
            idx = torch.randint(0, len(dataset), (batch_size,), generator=g)
            x, y = (torch.stack(t) for t in zip(*[dataset[int(i)] for i in idx]))
            final, states, _, _ = model._run(x, want_states=True)
            loss = model.exit_losses(states, final, y)[1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train(was_training)
    return losses


@torch.no_grad()
def exit_sweep(model, loader, thresholds) -> list[dict]:
    """Validation loss at full depth and with early exit, and blocks run per token, per threshold."""
    model.eval()
    device = next(model.parameters()).device
    batches = [(x.to(device), y.to(device)) for x, y in loader]
    full = sum(float(F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"))
               for x, y in batches)
    n = sum(int((y != -100).sum()) for _, y in batches)
    rows = []
    for thr in thresholds:
        nll = layers = 0.0
        for x, y in batches:
            nll += float(F.cross_entropy(model(x, exit_threshold=thr).flatten(0, 1), y.flatten(),
                                         ignore_index=-100, reduction="sum"))
            layers += float(model.last_layers_run[y != -100].sum())
        rows.append({"threshold": thr, "val_loss_full": full / n, "val_loss_exit": nll / n,
                     "loss_up": (nll - full) / n, "layers_per_token": layers / n,
                     "layer_reduction": model.n_layer / (layers / n)})
    return rows


@torch.no_grad()
def exit_table(model, batches, progress=None) -> dict[str, torch.Tensor]:
    """One full-depth pass: per target token, each exit head's confidence `conf` (E, N) and
    cross-entropy `ce` (E, N), and the final cross-entropy `ce_final` (N). `progress(phase, done, total)`
    is called after each batch."""
    model.eval()
    conf, ce, ce_final = [], [], []
    device = next(model.parameters()).device
    for i, (x, y) in enumerate(batches, 1):
        x, y = x.to(device), y.to(device)
        final, states, _, _ = model._run(x, want_states=True)
        if progress:
            progress("full-depth pass", i, len(batches))
        keep = (y != -100).flatten()
        prev, cs, es = None, [], []
        for j, h in zip(model.exit_layers, states):
            lg, c, prev = model._exit(j, h, prev)
            score = (F.softmax(lg.float(), -1).amax(-1) if model.cfg.exit_criterion == "maxprob"
                     else torch.sigmoid(c.float()))
            cs.append(score.flatten()[keep])
            es.append(F.cross_entropy(lg.flatten(0, 1).float(), y.flatten(), ignore_index=-100, reduction="none")[keep])
        conf.append(torch.stack(cs))
        ce.append(torch.stack(es))
        ce_final.append(F.cross_entropy(final.flatten(0, 1).float(), y.flatten(), ignore_index=-100,
                                        reduction="none")[keep])
    return {"conf": torch.cat(conf, 1).cpu(), "ce": torch.cat(ce, 1).cpu(), "ce_final": torch.cat(ce_final).cpu()}


def predicted_exit(table: dict, thresholds: list[float], exit_layers: list[int], n_layer: int) -> tuple[float, float]:
    """(loss rise, blocks run per token) if each token left at the first head whose confidence passes
    its threshold, read off `exit_table`. Approximate: a token's own loss and depth are exact, but
    exiting also changes the keys/values later tokens see, which only a real pass shows."""
    conf, ce = table["conf"], torch.cat([table["ce"], table["ce_final"][None]])
    ok = conf >= torch.tensor(thresholds, dtype=conf.dtype)[:, None]  # (E, N)
    first = torch.where(ok.any(0), ok.float().argmax(0), len(exit_layers))  # (N,) head index, E: none
    depth = torch.tensor([*exit_layers, n_layer], dtype=torch.float)[first]
    loss = ce.gather(0, first[None])[0]
    return float((loss - table["ce_final"]).mean()), float(depth.mean())


@torch.no_grad()
def _exit_loss(model, batches, thresholds, progress=None, phase: str = "") -> tuple[float, float]:
    """Real early-exit pass: (mean loss, blocks run per token) over the target tokens."""
    device = next(model.parameters()).device
    nll = layers = n = 0.0
    for i, (x, y) in enumerate(batches, 1):
        if progress:
            progress(phase, i - 1, len(batches))
        x, y = x.to(device), y.to(device)
        nll += float(F.cross_entropy(model(x, exit_threshold=thresholds).flatten(0, 1).float(), y.flatten(),
                                     ignore_index=-100, reduction="sum"))
        layers += float(model.last_layers_run[y != -100].sum())
        n += int((y != -100).sum())
    return nll / n, layers / n


def calibrate_exits(model, loader, budget: float, max_batches: int = 64, progress_every: float = 5.0) -> dict:
    """Per-head thresholds saving the most blocks with the validation loss up by at most `budget`.

    Greedy along the grid: starting from `never exit`, lower one head's threshold a step at a time,
    each time the head whose step saves the most blocks per unit of (predicted) loss rise, while the
    predicted rise stays within the budget. Real early-exit passes then pick, by bisection, the
    furthest point of that path whose measured rise fits.
    Logs a progress line at most every `progress_every` seconds.
    -> {"thresholds", "loss_up", "layers_per_token", "layer_reduction", "checked"}."""
    progress = Progress(progress_every)
    batches = [b for _, b in zip(range(max_batches), loader)]
    log.info("exit calibration: %d validation batches, loss budget %.3f", len(batches), budget)
    table = exit_table(model, batches, progress)
    E, L = len(model.exit_layers), model.n_layer
    pos = [0] * E  # grid index per head
    path = [list(pos)]
    cur = predicted_exit(table, [GRID[i] for i in pos], model.exit_layers, L)
    while True:
        best = None
        for e in range(E):
            if pos[e] + 1 == len(GRID):
                continue
            trial = list(pos)
            trial[e] += 1
            rise, depth = predicted_exit(table, [GRID[i] for i in trial], model.exit_layers, L)
            if rise > budget:
                continue
            gain = (cur[1] - depth) / max(rise - cur[0], 1e-6)
            if best is None or gain > best[0]:
                best = (gain, trial, (rise, depth))
        if best is None:
            break
        pos, cur = best[1], best[2]
        path.append(list(pos))
    # the measured rise can exceed the predicted one: bisect the path for its last point that fits
    full = float(table["ce_final"].mean())
    fit, lo, hi, checked = (0, 0.0, float(L)), 1, len(path) - 1, 0
    expected = math.ceil(math.log2(len(path))) if len(path) > 1 else 0  # bisection steps, about
    while lo <= hi:
        mid = (lo + hi) // 2
        loss, depth = _exit_loss(model, batches, [GRID[i] for i in path[mid]], progress,
                                 f"early-exit check {checked + 1} of ~{expected}")
        checked += 1
        if loss - full <= budget:
            fit, lo = (mid, loss - full, depth), mid + 1
        else:
            hi = mid - 1
    thresholds = [GRID[i] for i in path[fit[0]]]
    row = {"loss_up": fit[1], "layers_per_token": fit[2], "layer_reduction": L / fit[2]}
    out = {"thresholds": thresholds, "loss_up": row["loss_up"], "layers_per_token": row["layers_per_token"],
           "layer_reduction": row["layer_reduction"], "checked": checked}
    log.info("exit calibration (budget %.3f): thresholds %s, loss up %.4f, %.3fx fewer blocks (%d checks)",
             budget, thresholds, out["loss_up"], out["layer_reduction"], checked)
    return out
