"""Knowledge distillation as a wrapper model: student + frozen teacher, adding a `kd` loss.

    kd = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)),  task losses * (1 - alpha)

The trainer trains the wrapper like any model (no second loop) and saves only the student.
Each family's spec says how to get matching logits from student and teacher (`FamilySpec.kd`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1.config import DistillConfig
from r1.errors import ConfigError


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over rows (the last dim holds the classes).
    `mask` (bool, leading dims) keeps only some rows, e.g. assigned anchors or response tokens."""
    s = student_logits.reshape(-1, student_logits.shape[-1]).float()
    t = teacher_logits.reshape(-1, teacher_logits.shape[-1]).float()
    if mask is not None:
        keep = mask.reshape(-1)
        s, t = s[keep], t[keep]
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_ps, log_pt = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
    return kl * temperature ** 2


class Distiller(nn.Module):
    """`model(x, targets)` -> student's task losses x (1 - alpha) + {"kd": ...}; `model(x)` -> student(x)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, family: str, cfg: DistillConfig):
        super().__init__()
        from r1.family import get_family

        self.adapter = get_family(family).hook("kd", "distill")
        self.student, self.teacher, self.family = student, teacher.eval(), family
        self.alpha, self.temperature = cfg.alpha, cfg.temperature
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher never updates its batch-norm statistics
        return self

    def forward(self, inputs, targets=None):
        if targets is None:
            return self.student(inputs)
        task, s_logits, t_logits, mask = self.adapter(self.student, self.teacher, inputs, targets)
        out = {k: (1 - self.alpha) * v for k, v in task.items()}
        out["kd"] = self.alpha * kd_loss(s_logits, t_logits, self.temperature, mask)
        return out


def wrap_for_distillation(cfg: DistillConfig):
    """A `wrap_model` hook for the Trainer: loads the teacher from its run dir."""
    from r1.artifacts import load_model

    def wrap(student: nn.Module, data) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # building the teacher must not shift the student's
            teacher = load_model(cfg.teacher)     # random stream: plain and KD runs stay paired by seed
        if teacher.r1_meta.get("num_classes") != data.meta.get("num_classes"):
            raise ConfigError(f"distill.teacher: {cfg.teacher} predicts {teacher.r1_meta.get('num_classes')} "
                              f"classes, the data has {data.meta.get('num_classes')}")
        return Distiller(student, teacher, data.family, cfg)
    return wrap
