"""Knowledge distillation as a wrapper model: student + frozen teacher, adding a `kd` loss.

    kd = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)),  task losses * (1 - alpha)

The trainer trains the wrapper like any model (no second loop) and saves only the student.
Each family's spec says how to get matching logits from student and teacher (`FamilySpec.kd`).

Feature distillation (TinyBERT; `distill.feature_weight` > 0) adds, for each student layer i and
its teacher layer j = layer_map[i],

    feature = feature_weight * mean_i [ sum_k MSE(W_k h_k^s(i), h_k^t(j)) + sum_m KL(A_m^t(j) || A_m^s(i)) ]

over the layer's hidden states h_k (W_k: a learned linear map when the widths differ, trained with
the student and kept in the wrapper, so it is never saved with the student) and attention maps A_m
(per head when the head counts match, else head-averaged; KL per query row). The family's kd hook
gives the features: called with `features=True` it returns a fifth item, the pair (student layers,
teacher layers) of `LayerFeatures` lists; called with `targets=None` it runs no task loss (the
wrapper's shape probe at construction).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

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


@dataclass
class LayerFeatures:
    """What one layer gives feature distillation: hidden states (B, N, D) with masks of their real
    tokens (B, N) (None: all real), attention maps (B, heads, Nq, Nk) (softmax weights) with masks of
    their real query rows (B, Nq) (None: all real)."""

    hidden: list[tuple[torch.Tensor, torch.Tensor | None]]
    attention: list[tuple[torch.Tensor, torch.Tensor | None]]


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` (B, N) over the positions where `mask` (B, N) is True (all when None)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error per token (B, N, D) -> scalar, over real tokens."""
    return masked_mean((student.float() - teacher.float()).pow(2).mean(-1), mask)


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None,
                 eps: float = 1e-8) -> torch.Tensor:
    """KL(teacher row || student row) of attention maps (B, H, Nq, Nk), averaged over heads and real
    query rows. Different head counts: the head-averaged maps are compared."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    s, t = student.float(), teacher.float()
    kl = (t * (t.clamp_min(eps).log() - s.clamp_min(eps).log())).sum(-1)  # (B, H, Nq)
    return masked_mean(kl.mean(1), mask)


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's uniform mapping: student layer i -> teacher layer (i + 1) * M // N - 1 (the last to the last)."""
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def check_layer_map(layer_map: list[int], student_layers: int, teacher_layers: int) -> list[int]:
    allowed = f"allowed: teacher layers 0..{teacher_layers - 1}"
    if not layer_map:
        return uniform_layer_map(student_layers, teacher_layers)
    if len(layer_map) != student_layers:
        raise ConfigError(f"distill.layer_map: {layer_map} has {len(layer_map)} entries, the student has "
                          f"{student_layers} layers: give one teacher layer per student layer ({allowed})")
    bad = [j for j in layer_map if not 0 <= j < teacher_layers]
    if bad:
        raise ConfigError(f"distill.layer_map: {bad[0]} is not a teacher layer; {allowed}")
    return list(layer_map)


class FeatureDistillation(nn.Module):
    """The feature loss for a fixed layer map; one projection per hidden-state slot k (shared over
    layers), an identity when student and teacher widths match."""

    def __init__(self, student: list[LayerFeatures], teacher: list[LayerFeatures], layer_map: list[int]):
        super().__init__()
        self.layer_map = check_layer_map(layer_map, len(student), len(teacher))
        for i, j in enumerate(self.layer_map):  # the same tokens on both sides; widths and heads may differ
            self._check("hidden state", student[i].hidden, teacher[j].hidden, i, j, lambda s: s[:-1])
            self._check("attention map", student[i].attention, teacher[j].attention, i, j, lambda s: s[:1] + s[2:])
        self.projections = nn.ModuleList(
            nn.Identity() if h.shape[-1] == t.shape[-1] else nn.Linear(h.shape[-1], t.shape[-1], bias=False)
            for (h, _), (t, _) in zip(student[0].hidden, teacher[self.layer_map[0]].hidden))

    @staticmethod
    def _check(what: str, student: list, teacher: list, i: int, j: int, tokens) -> None:
        if len(student) != len(teacher):
            raise ConfigError(f"distill.feature_weight: student layer {i} gives {len(student)} {what}s, "
                              f"teacher layer {j} gives {len(teacher)}")
        for k, ((s, _), (t, _)) in enumerate(zip(student, teacher)):
            if tokens(tuple(s.shape)) != tokens(tuple(t.shape)):
                raise ConfigError(f"distill.feature_weight: {what} {k} of student layer {i} {tuple(s.shape)} "
                                  f"does not cover the tokens of teacher layer {j} {tuple(t.shape)}")

    def forward(self, student: list[LayerFeatures], teacher: list[LayerFeatures]) -> torch.Tensor:
        total = student[0].hidden[0][0].new_zeros((), dtype=torch.float32)
        for i, j in enumerate(self.layer_map):
            s, t = student[i], teacher[j]
            for proj, (hs, mask), (ht, _) in zip(self.projections, s.hidden, t.hidden):
                total = total + hidden_mse(proj(hs), ht, mask)
            for (a_s, mask), (a_t, _) in zip(s.attention, t.attention):
                total = total + attention_kl(a_s, a_t, mask)
        return total / len(self.layer_map)


class Distiller(nn.Module):
    """`model(x, targets)` -> student's task losses x (1 - alpha) + {"kd": ...} (+ {"feature": ...});
    `model(x)` -> student(x). `example`: a batch of inputs that sizes the feature projections
    (needed when `cfg.feature_weight` > 0)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, family: str, cfg: DistillConfig, example=None):
        super().__init__()
        from r1.family import get_family

        self.adapter = get_family(family).hook("kd", "distill")
        self.student, self.teacher, self.family = student, teacher.eval(), family
        self.alpha, self.temperature = cfg.alpha, cfg.temperature
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.feature_weight = cfg.feature_weight
        self.features = self._probe(example, cfg.layer_map) if cfg.feature_weight > 0 else None

    def _probe(self, example, layer_map: list[int]) -> FeatureDistillation:
        """Run the kd hook once on `example` to learn each side's layers and widths."""
        if "features" not in inspect.signature(self.adapter).parameters:
            raise ConfigError(f"distill.feature_weight: family {self.family!r} gives no features to distill; "
                              "set it to 0 (logit KD only)")
        if example is None:
            raise ConfigError("distill.feature_weight: an example batch is needed to size the feature projections")
        was_training = self.student.training
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            self.student.eval()
            *_, (s_layers, t_layers) = self.adapter(self.student, self.teacher, example, None, features=True)
        self.student.train(was_training)
        if not s_layers or not t_layers:
            raise ConfigError(f"distill.feature_weight: the student gives {len(s_layers)} layers, the teacher "
                              f"{len(t_layers)}; both need at least one")
        return FeatureDistillation(s_layers, t_layers, layer_map)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher never updates its batch-norm statistics
        return self

    def forward(self, inputs, targets=None):
        if targets is None:
            return self.student(inputs)
        if self.features is None:
            task, s_logits, t_logits, mask = self.adapter(self.student, self.teacher, inputs, targets)
        else:
            task, s_logits, t_logits, mask, (s_layers, t_layers) = self.adapter(
                self.student, self.teacher, inputs, targets, features=True)
        out = {k: (1 - self.alpha) * v for k, v in task.items()}
        out["kd"] = self.alpha * kd_loss(s_logits, t_logits, self.temperature, mask)
        if self.features is not None:
            out["feature"] = self.feature_weight * self.features(s_layers, t_layers)
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
        example = None
        if cfg.feature_weight > 0:
            from r1.family import get_family
            make = get_family(data.family).hook("example_inputs", "distill.feature_weight")
            example = make(data.meta, 2, torch.Generator().manual_seed(0))
        return Distiller(student, teacher, data.family, cfg, example)
    return wrap
