"""Classification metrics: accuracy, macro-F1, confusion matrix (also drawn as a PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[true, pred] counts."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    present = cm.sum(1) > 0  # macro over classes that occur in the labels
    return {"accuracy": float(tp.sum() / max(cm.sum(), 1)), "macro_f1": float(f1[present].mean())}


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1 + 0.45 * n, 1 + 0.45 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title="confusion matrix")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_classification(model, loader, meta: dict, device, out_dir=None) -> dict[str, float]:
    preds, labels = [], []
    for batch in loader:
        if batch is None:
            continue
        images, y = batch
        preds.append(model(images.to(device)).argmax(1).cpu())
        labels.append(y)
    p, y = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    cm = confusion_matrix(p, y, meta["num_classes"])
    if out_dir is not None:
        plot_confusion(cm, meta["classes"], Path(out_dir) / "confusion_matrix.png")
    return scores_from_confusion(cm)
