"""Early-exit tools for R1-LM: fit the exit classifiers of a trained model, sweep thresholds.

The exit classifiers read detached features, so fitting them after training (the language model
frozen) gives the same kind of classifier as joint training; it also upgrades models trained
before the classifiers existed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
    batches = list(loader)
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
