"""Baselines of the Relation Network paper (Santoro et al. 2017) on R1-MM's input contract, with the
same question encoder as R1-MM (the paper used an LSTM):

* `mm_cnn_mlp`: late fusion. CNN features (the flattened last map, as in the paper, or its mean)
  concatenated with the pooled question -> MLP -> answer.
* `mm_cnn_rn`: CNN -> grid of "objects" (features + cell coordinates); g over every object pair
  conditioned on the question, summed, -> f -> answer.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1.errors import ConfigError
from r1.models.mm.config import (
    PLACEHOLDER_VOCAB,
    CNNMLPConfig,
    CNNRNConfig,
    MMBaseConfig,
)
from r1.models.mm.layers import PlainCNN, TextEncoder, grid_coords, masked_mean, share_images
from r1.models.mm.r1mm import answer_targets, split_inputs
from r1.registry import register_model


def feature_side(img_size: int, n_convs: int) -> int:
    """Side of the map after n stride-2 3x3 convs (padding 1)."""
    for _ in range(n_convs):
        img_size = (img_size + 1) // 2
    return img_size


class QuestionImageModel(nn.Module):
    """Shared parts: the question encoder, the CNN, the answer loss."""

    def __init__(self, cfg: MMBaseConfig):
        super().__init__()
        if cfg.num_classes <= 0:
            raise ConfigError("model.num_classes: the answer vocabulary is unknown (0); set it or use an mm data kind")
        self.cfg = cfg
        self.text = TextEncoder(cfg.vocab_size or PLACEHOLDER_VOCAB, cfg.dim, cfg.heads, cfg.text_layers,
                                cfg.max_len or 64, cfg.dropout)
        self.cnn = PlainCNN(cfg.channels)

    def question(self, tokens, mask) -> torch.Tensor:
        if tokens.shape[1] > (self.cfg.max_len or tokens.shape[1]):
            tokens, mask = tokens[:, :self.cfg.max_len], mask[:, :self.cfg.max_len]
        return masked_mean(self.text(tokens, mask), mask)

    def logits(self, images, q) -> torch.Tensor:
        raise NotImplementedError

    def losses_and_logits(self, inputs, targets):
        images, tokens, mask = split_inputs(inputs)
        logits = self.logits(images, self.question(tokens, mask))
        loss = F.cross_entropy(logits, answer_targets(targets), label_smoothing=self.cfg.label_smoothing)
        return {"answer": loss}, logits

    def forward(self, inputs, targets=None):
        if targets is None:
            images, tokens, mask = split_inputs(inputs)
            return self.logits(images, self.question(tokens, mask))
        return self.losses_and_logits(inputs, targets)[0]


class CNNMLP(QuestionImageModel):
    def __init__(self, cfg: CNNMLPConfig):
        super().__init__(cfg)
        side = feature_side(cfg.img_size or 75, len(cfg.channels))
        image_dim = cfg.channels[-1] * (side * side if cfg.image_pool == "flatten" else 1)
        self.mlp = nn.Sequential(nn.Linear(image_dim + cfg.dim, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.hidden, cfg.num_classes))

    def logits(self, images, q):
        fmap = self.cnn(images)
        feat = share_images(fmap.flatten(1) if self.cfg.image_pool == "flatten" else fmap.mean((2, 3)), q.shape[0])
        if feat.shape[1] + q.shape[1] != self.mlp[0].in_features:
            raise ConfigError(f"mm_cnn_mlp: image features {tuple(fmap.shape[1:])} do not fit the MLP built for "
                              f"{self.cfg.img_size or 75}x{self.cfg.img_size or 75} images; set model.img_size or image_pool=mean")
        return self.mlp(torch.cat([feat, q], 1))


class CNNRN(QuestionImageModel):
    def __init__(self, cfg: CNNRNConfig):
        super().__init__(cfg)
        c = cfg.channels[-1] + 2  # object = features + (x, y)
        # g's first layer on [o_i; o_j; q] split in three: computed per object, summed per pair
        self.g_i, self.g_j = nn.Linear(c, cfg.g_hidden), nn.Linear(c, cfg.g_hidden, bias=False)
        self.g_q = nn.Linear(cfg.dim, cfg.g_hidden, bias=False)
        rest: list[nn.Module] = []
        for _ in range(cfg.g_layers - 1):
            rest += [nn.Linear(cfg.g_hidden, cfg.g_hidden), nn.ReLU()]
        self.g = nn.Sequential(*rest)
        self.f = nn.Sequential(nn.Linear(cfg.g_hidden, cfg.f_hidden), nn.ReLU(), nn.Linear(cfg.f_hidden, cfg.f_hidden),
                               nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.f_hidden, cfg.num_classes))

    def logits(self, images, q):
        fmap = share_images(self.cnn(images), q.shape[0])
        B, C, h, w = fmap.shape
        objects = torch.cat([fmap.flatten(2).transpose(1, 2),
                             grid_coords(h, w, fmap.device).to(fmap.dtype).expand(B, -1, -1)], -1)  # (B, N, C+2)
        pairs = (self.g_i(objects)[:, :, None] + self.g_j(objects)[:, None, :]
                 + self.g_q(q)[:, None, None])  # (B, N, N, G)
        pairs = self.g(F.relu(pairs))
        return self.f(pairs.mean((1, 2)))  # the paper sums; the mean keeps the scale independent of N


@register_model("mm_cnn_mlp", family="mm", config=CNNMLPConfig)
def mm_cnn_mlp(cfg: CNNMLPConfig) -> nn.Module:
    """CNN+MLP baseline (Santoro et al. 2017): CNN features and the pooled question -> MLP (late fusion)."""
    return CNNMLP(cfg)


@register_model("mm_cnn_rn", family="mm", config=CNNRNConfig)
def mm_cnn_rn(cfg: CNNRNConfig) -> nn.Module:
    """CNN + Relation Network (Santoro et al. 2017): g over every pair of CNN cells given the question, summed -> f."""
    return CNNRN(cfg)
