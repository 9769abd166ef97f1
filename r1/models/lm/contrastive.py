"""Domain-adaptation contrastive term: supervised InfoNCE between sequence embeddings of the
current (domain) stage and of replayed general (earlier-stage) data.

Each sequence's embedding is its final normalised hidden state mean-pooled over the positions
that carry a target. With cosine similarities s_ij / tau, every sequence i is an anchor whose
positives are the other sequences of its own source and whose negatives are those of the other
source (Khosla et al., 2020, with the source as the label):

    L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / tau) / sum_{a != i} exp(s_ia / tau) )

so domain and general sequences occupy separate regions of the representation, the aim being
that adapting to the domain disturbs the general region less. A batch holding one source only
gives 0 (there is nothing to contrast).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_pool(hidden: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """hidden (B, T, C), targets (B, T) with -100 = no target -> (B, C) mean over target positions
    (all positions for rows without any target)."""
    if targets is None:
        return hidden.mean(1)
    w = (targets != -100).to(hidden.dtype)
    w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))  # (B, T)
    return (hidden * w[..., None]).sum(1) / w.sum(1, keepdim=True)


def domain_contrastive(z: torch.Tensor, domain: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """z (B, C) sequence embeddings, domain (B,) source labels -> scalar supervised InfoNCE."""
    domain = domain.flatten()
    if z.shape[0] < 3 or bool((domain == domain[0]).all()):
        return z.sum() * 0.0  # keeps the graph (and DDP) identical whether or not the term is active
    z = F.normalize(z.float(), dim=-1)
    sim = z @ z.T / temperature  # (B, B)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)  # over a != i
    pos = (domain[:, None] == domain[None, :]) & ~eye
    has = pos.any(1)
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)[has] / pos.sum(1)[has])
    return per_anchor.mean()
