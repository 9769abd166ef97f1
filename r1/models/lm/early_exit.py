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
from statistics import NormalDist

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
    conf, ce, ce_final, win = [], [], [], []
    device = next(model.parameters()).device
    seen = 0
    for i, (x, y) in enumerate(batches, 1):
        x, y = x.to(device), y.to(device)
        final, states, _, _ = model._run(x, want_states=True)
        if progress:
            progress("full-depth pass", i, len(batches))
        keep = (y != -100).flatten()
        win.append((torch.arange(y.shape[0], device=device)[:, None].expand_as(y).flatten() + seen)[keep].cpu())
        seen += y.shape[0]
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
    return {"conf": torch.cat(conf, 1).cpu(), "ce": torch.cat(ce, 1).cpu(), "ce_final": torch.cat(ce_final).cpu(),
            "window": torch.cat(win)}


def predicted_exit(table: dict, thresholds: list[float], exit_layers: list[int], n_layer: int) -> tuple[float, float]:
    """(loss rise, blocks run per token) if each token left at the first head whose confidence passes
    its threshold, read off `exit_table`. Approximate: a token's own loss and depth are exact, but
    exiting also changes the keys/values later tokens see, which only a real pass shows."""
    rise, depth, _ = predicted_cost(table, thresholds, exit_layers, n_layer)
    return rise, depth


def predicted_cost(table: dict, thresholds: list[float], exit_layers: list[int], n_layer: int,
                   check: float = 0.0, fill: float = 0.0, chained: bool = False) -> tuple[float, float, float]:
    """`predicted_exit`'s (loss rise, blocks per token) and the cost per token of batch-1 cached generation
    in blocks: blocks run + `check` per exit head evaluated + `fill` per skipped block (its keys/values).
    A head whose threshold is above 1 never fires and is not evaluated, unless `chained` (the `learned`
    criterion, whose features read the previous head: every head up to the exit or the last active head
    runs). The same rule as R1LM._decode_one."""
    conf, ce = table["conf"], torch.cat([table["ce"], table["ce_final"][None]])
    E = len(exit_layers)
    ok = conf >= torch.tensor(thresholds, dtype=conf.dtype)[:, None]  # (E, N)
    first = torch.where(ok.any(0), ok.float().argmax(0), E)  # (N,) head index, E: none
    depth = torch.tensor([*exit_layers, n_layer], dtype=torch.float)[first]
    loss = ce.gather(0, first[None])[0]
    on = [t <= 1.0 for t in thresholds]
    last = max((e for e in range(E) if on[e]), default=-1)  # heads after the last active one never run
    active = torch.tensor([(chained or on[e]) and e <= last for e in range(E)], dtype=torch.float)
    checks = torch.cat([torch.zeros(1), active.cumsum(0)])  # [e + 1]: heads evaluated by a token leaving at head e
    n_checks = checks[(first + 1).clamp(max=E)]
    cost = depth + check * n_checks + fill * (n_layer - depth)
    return float((loss - table["ce_final"]).mean()), float(depth.mean()), float(cost.mean())


@torch.no_grad()
def _exit_loss(model, batches, thresholds, progress=None, phase: str = "") -> tuple[float, float]:
    """Real early-exit pass: (mean loss, blocks run per token) over the target tokens."""
    loss, depth, _ = _exit_pass(model, batches, thresholds, progress, phase)
    return float(loss.mean()), depth


@torch.no_grad()
def _exit_pass(model, batches, thresholds, progress=None, phase: str = "") -> tuple[torch.Tensor, float, float]:
    """Real early-exit pass: (per-token loss in `exit_table` order, blocks run per token, seconds)."""
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    losses, layers = [], 0.0
    for i, (x, y) in enumerate(batches, 1):
        if progress:
            progress(phase, i - 1, len(batches))
        x, y = x.to(device), y.to(device)
        keep = (y != -100).flatten()
        losses.append(F.cross_entropy(model(x, exit_threshold=thresholds).flatten(0, 1).float(), y.flatten(),
                                      ignore_index=-100, reduction="none")[keep].cpu())
        layers += float(model.last_layers_run[y != -100].sum())
    loss = torch.cat(losses)
    return loss, layers / max(1, loss.numel()), time.perf_counter() - t0


def rise_bound(rise: torch.Tensor, window: torch.Tensor, z: float) -> tuple[float, float]:
    """(mean loss rise per token, its standard error) from per-token rises and their window ids: the
    windows are the sampling units (tokens of one window are not independent), so the error is the
    spread of the per-window means over sqrt(windows). The calibration accepts a point when
    mean + z * error fits the budget: a one-sided bound on the rise over the text the windows sample."""
    n = int(window.max()) + 1 if window.numel() else 0
    if n < 2 or z <= 0:
        return float(rise.mean()), 0.0
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, window, rise.double())
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, window, torch.ones_like(rise, dtype=torch.float64))
    means = sums[counts > 0] / counts[counts > 0]
    return float(rise.mean()), float(means.std() / math.sqrt(len(means)))


def spread_batches(loader, max_batches: int) -> list:
    """At most `max_batches` batches of `loader`, with windows evenly spaced over its whole dataset when the
    loader is a plain DataLoader over a longer dataset (a contiguous head of the validation split is one
    stretch of text, not a sample of it); else its first `max_batches` batches."""
    from torch.utils.data import DataLoader, Subset

    dataset, bs = getattr(loader, "dataset", None), getattr(loader, "batch_size", None)
    if isinstance(loader, DataLoader) and bs and hasattr(dataset, "__len__") and len(dataset) > max_batches * bs:
        n = max_batches * bs
        picked = Subset(dataset, [i * len(dataset) // n for i in range(n)])
        loader = DataLoader(picked, batch_size=bs, shuffle=False, collate_fn=loader.collate_fn)
    return [b for _, b in zip(range(max_batches), loader)]


def _search_table(table: dict, max_tokens: int = 65536) -> dict:
    """Every k-th token of `exit_table`, at most `max_tokens`: the greedy search evaluates the table
    hundreds of times; the real passes that pick the final point read every token."""
    k = max(1, -(-table["ce_final"].numel() // max_tokens))
    return {"conf": table["conf"][:, ::k], "ce": table["ce"][:, ::k], "ce_final": table["ce_final"][::k],
            "window": table["window"][::k]}


ACTIVATE = range(1, len(GRID), 3)  # grid points a head that is off may jump to in one move


def calibrate_exits(model, loader, budget: float, max_batches: int = 64, progress_every: float = 5.0,
                    check: float = 0.0, fill: float = 0.0, confidence: float = 0.5) -> dict:
    """Per-head thresholds saving the most generation cost with the validation loss up by at most `budget`.

    The cost of a token is in blocks (`predicted_cost`): blocks run, plus `check` per exit head
    evaluated and `fill` per skipped block; with both 0 it is the blocks run. Greedy: starting from
    `never exit` (heads off, nothing evaluated), each move either lowers an active head's threshold
    one grid step or switches a head on at some grid point, taking the move that saves the most cost
    per unit of (predicted) loss rise while the predicted rise stays within the budget; a head that
    costs more in checks than it saves is never switched on. Real early-exit passes then pick, by
    bisection, the furthest point of that path whose measured rise fits: with `confidence` above 0.5,
    whose one-sided upper bound at that confidence fits (`rise_bound`: the calibration windows are a
    sample of the text; the bound makes the budget hold on windows it did not read).
    The batches are `spread_batches(loader, max_batches)`: evenly spaced over the loader's dataset.
    Logs a progress line at most every `progress_every` seconds.
    -> {"thresholds", "loss_up", "loss_up_se", "loss_up_bound", "layers_per_token", "layer_reduction", "cost",
    "checked", "windows", "seconds"}."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    t0 = time.perf_counter()
    z = NormalDist().inv_cdf(confidence)
    progress = Progress(progress_every)
    batches = spread_batches(loader, max_batches)
    log.info("exit calibration: %d validation batches, loss budget %.3f", len(batches), budget)
    table = exit_table(model, batches, progress)
    search = _search_table(table)
    E, L = len(model.exit_layers), model.n_layer
    chained = getattr(model.cfg, "exit_criterion", "") == "learned"

    def predict(p):
        return predicted_cost(search, [GRID[i] for i in p], model.exit_layers, L, check, fill, chained)

    pos = [0] * E  # grid index per head; 0: never exit (off)
    path = [list(pos)]
    cur = predict(pos)
    while True:
        best = None
        for e in range(E):
            for target in (ACTIVATE if pos[e] == 0 else [pos[e] + 1]):
                if target >= len(GRID):
                    continue
                trial = list(pos)
                trial[e] = target
                rise, depth, cost = predict(trial)
                if rise > budget or cost >= cur[2]:
                    continue
                gain = (cur[2] - cost) / max(rise - cur[0], 1e-6)
                if best is None or gain > best[0]:
                    best = (gain, trial, (rise, depth, cost))
        if best is None:
            break
        pos, cur = best[1], best[2]
        path.append(list(pos))
    # the measured rise can exceed the predicted one: bisect the path for its last point that fits
    fit, lo, hi, checked = (0, 0.0, 0.0, float(L)), 1, len(path) - 1, 0
    expected = math.ceil(math.log2(len(path))) if len(path) > 1 else 0  # bisection steps, about
    while lo <= hi:
        mid = (lo + hi) // 2
        loss, depth, _ = _exit_pass(model, batches, [GRID[i] for i in path[mid]], progress,
                                    f"early-exit check {checked + 1} of ~{expected}")
        rise, se = rise_bound(loss - table["ce_final"], table["window"], z)
        checked += 1
        if rise + z * se <= budget:
            fit, lo = (mid, rise, se, depth), mid + 1
        else:
            hi = mid - 1
    thresholds = [GRID[i] for i in path[fit[0]]]
    out = {"thresholds": thresholds, "loss_up": fit[1], "loss_up_se": fit[2], "loss_up_bound": fit[1] + z * fit[2],
           "confidence": confidence, "layers_per_token": fit[3], "layer_reduction": L / fit[3],
           "cost": predict(path[fit[0]])[2], "checked": checked, "windows": int(table["window"].max()) + 1
           if table["window"].numel() else 0, "seconds": time.perf_counter() - t0}
    log.info("exit calibration (budget %.3f at %.0f%% confidence, %d windows): thresholds %s, loss up %.4f "
             "(+- %.4f), %.3fx fewer blocks, predicted cost %.2f of %d blocks per token (%d checks)", budget,
             100 * confidence, out["windows"], thresholds, out["loss_up"], out["loss_up_se"],
             out["layer_reduction"], out["cost"], L, checked)
    return out
