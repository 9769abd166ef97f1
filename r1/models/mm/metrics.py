"""Question-answering metrics of the mm family: accuracy overall, on relational and non-relational
questions, per question type, the majority-answer baseline and the counting error."""
from __future__ import annotations

import torch


def _to(x, device):
    if isinstance(x, dict):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)


def count_values(answers: list[str]) -> dict[int, float]:
    """Answer index -> number, for the answers that are numbers ('20+', a capped count bucket, is 20)."""
    out = {}
    for i, a in enumerate(answers):
        try:
            out[i] = float(a[:-1] if a.endswith("+") else a)
        except ValueError:
            pass
    return out


def evaluate_vqa(model, loader, meta: dict, device, out_dir=None) -> dict[str, float]:
    """accuracy, accuracy_relational / accuracy_nonrelational (where the data has question types),
    accuracy_<type> per question type, majority_accuracy (always answering the commonest training
    answer), count_mae / count_mse (counting questions: the most likely numeric answer vs the true count)."""
    logits, answers, qtypes = [], [], []
    for batch in loader:
        if batch is None:  # no image of the batch decoded (skipped and counted by the data kind)
            continue
        inputs, targets = batch
        logits.append(model(_to(inputs, device)).float().cpu())
        if isinstance(targets, dict):
            answers.append(targets["answer"])
            qtypes.append(targets.get("qtype", torch.full_like(targets["answer"], -1)))
        else:
            answers.append(targets)
            qtypes.append(torch.full_like(targets, -1))
    logits, y, qt = torch.cat(logits), torch.cat(answers), torch.cat(qtypes)
    correct = (logits.argmax(1) == y).float()
    out = {"accuracy": float(correct.mean()),
           "majority_accuracy": float((y == meta.get("majority_answer", -1)).float().mean())}
    relational = torch.isin(qt, torch.tensor(meta.get("relational_types", []), dtype=qt.dtype))
    if meta.get("relational_types"):
        for name, sel in (("relational", relational), ("nonrelational", ~relational & (qt >= 0))):
            if sel.any():
                out[f"accuracy_{name}"] = float(correct[sel].mean())
    for i, name in enumerate(meta.get("question_types", [])):
        if (qt == i).any():
            out[f"accuracy_{name}"] = float(correct[qt == i].mean())
    counting = torch.isin(qt, torch.tensor(meta.get("count_types", []), dtype=qt.dtype))
    values = count_values(meta.get("answers", []))
    if counting.any() and values:
        idx = torch.tensor(list(values))
        num = torch.tensor(list(values.values()))
        pred = num[logits[counting][:, idx].argmax(1)]
        true = torch.tensor([values.get(int(a), float("nan")) for a in y[counting]])
        out["count_mae"] = float((pred - true).abs().nanmean())
        out["count_mse"] = float(((pred - true) ** 2).nanmean())
    return out
