"""FGSM and PGD (L-infinity) attacks in pixel units.

Images are attacked as pixels in [0, 1], before normalisation: `eps` = 0.1 is a change of at most
0.1 (about 25 of 255 levels) per pixel and channel, whatever the model's mean/std. The attacked
function is `PixelModel`: the model with its normalisation inside, so the gradient flows through
it. Attacks never touch the model's parameter gradients (`torch.autograd.grad` on the input only)
and run in float32 with autocast off.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("fgsm", "pgd")


class PixelModel(nn.Module):
    """`model((x - mean) / std)`: a classifier taking [0, 1] pixels (B, C, H, W) -> logits (B, K)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)

    def to_pixels(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised model inputs back to [0, 1] pixels."""
        return (inputs * self.std.to(inputs.device) + self.mean.to(inputs.device)).clamp(0.0, 1.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(pixels))


def _loss_grad(forward: Callable, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d cross_entropy(forward(x), targets) / dx (targets: class indices or soft probabilities)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        logits = forward(x)
        if logits.dim() != 2:
            raise ValueError(f"the attacked model must return logits (batch, classes), got shape {tuple(logits.shape)}")
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _check(eps: float) -> None:
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1] (pixel units), got {eps}")


def fgsm(forward: Callable, pixels: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps along sign(grad),
    clamped to [0, 1]."""
    _check(eps)
    pixels = pixels.detach().float()
    if eps == 0:
        return pixels.clone()
    step = eps * _loss_grad(forward, pixels, targets).sign()
    return (pixels + step).clamp(0.0, 1.0).detach()


def pgd(forward: Callable, pixels: torch.Tensor, targets: torch.Tensor, eps: float, steps: int = 10,
        alpha: float = 0.0, random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018): `steps` signed-gradient steps of size `alpha`
    (0: 2.5 * eps / steps), each projected back onto the eps-ball around `pixels` and onto [0, 1];
    `random_start` begins at a uniform point of the ball."""
    _check(eps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    pixels = pixels.detach().float()
    if eps == 0:
        return pixels.clone()
    alpha = alpha or 2.5 * eps / steps
    x = pixels
    if random_start:
        noise = torch.rand(pixels.shape, generator=generator, device="cpu").to(pixels.device)
        x = (pixels + (2 * noise - 1) * eps).clamp(0.0, 1.0)
    for _ in range(steps):
        x = x + alpha * _loss_grad(forward, x, targets).sign()
        x = torch.min(torch.max(x, pixels - eps), pixels + eps).clamp(0.0, 1.0).detach()
    return x


def attack(method: str, forward: Callable, pixels: torch.Tensor, targets: torch.Tensor, eps: float,
           steps: int = 10, alpha: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """`fgsm` or `pgd` by name (steps / alpha / generator only matter to pgd)."""
    if method == "fgsm":
        return fgsm(forward, pixels, targets, eps)
    if method == "pgd":
        return pgd(forward, pixels, targets, eps, steps, alpha, generator=generator)
    raise ValueError(f"unknown attack {method!r}; allowed: {', '.join(METHODS)}")
