"""Multimodal (image + question -> answer): config classes of its models and data kinds (no torch here)."""
from __future__ import annotations

from dataclasses import dataclass

from r1.config import DataConfig, ModelConfig, opt, variant
from r1.errors import ConfigError

PLACEHOLDER_VOCAB = 128  # token vocabulary of a model built without data (e.g. `r1 models` parameter counts)


@dataclass
class MMBaseConfig(ModelConfig):
    """Fields every mm model has: the answer vocabulary is `num_classes`, the question tokens `vocab_size`."""

    vocab_size: int = opt(0, f"Question-token vocabulary. 0: from the data's tokenizer (a model built without data "
                             f"uses {PLACEHOLDER_VOCAB}).", min=0)
    max_len: int = opt(0, "Longest question in tokens (longer ones are cut). 0: from the data.", min=0)
    dim: int = opt(64, "Width of the text encoder and of the fused features.", min=8)
    heads: int = opt(4, "Attention heads of the text encoder (and the cross-modal attention); dim / heads even.",
                     min=1)
    text_layers: int = opt(2, "Bidirectional Transformer blocks of the question encoder.", min=1)
    channels: list[int] = opt([16, 24, 32, 48], "CNN stage widths; each stage halves the resolution "
                                                "(75 -> 38 -> 19 -> 10 -> 5 with four).")
    dropout: float = opt(0.0, "Dropout in the text encoder and before the answer layer.", min=0.0, max=1.0)
    label_smoothing: float = opt(0.0, "Label smoothing of the answer cross-entropy.", min=0.0, max=1.0)

    def validate(self, prefix: str) -> None:
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ConfigError(f"{prefix}.dim: {self.dim} must split into heads={self.heads} even head sizes")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"{prefix}.channels: expected a non-empty list of positive widths, got {self.channels}")


@dataclass
class R1MMConfig(MMBaseConfig):
    coords: bool = opt(True, "Append x and y coordinate channels to the image (CoordConv): image tokens know "
                             "where they are to sub-cell precision (left/top and distance questions).")
    film: bool = opt(False, "Question-conditioned feature modulation of the image tokens before the cross layers "
                            "(FiLM: v * (1 + gamma(q)) + beta(q), q the pooled question; starts as identity).")
    late_blocks: int = opt(2, "Residual 3x3 blocks at the lowest resolution (the image-token grid).", min=0)
    deform_layers: int = opt(1, "How many of the late blocks (the last ones) are deformable (torchvision "
                                "DeformConv2d, learned offsets + mask; ~10-50x a plain conv on CPU, so only at "
                                "the lowest resolution). 0: none.", min=0)
    cross_layers: int = opt(2, "Cross-modal layers: text attends image tokens, image tokens attend text, then the FFN.",
                            min=1)
    qk_norm: bool = opt(True, "Cross-modal attention on L2-normalised queries and keys times a learned per-head "
                              "scale (QK-norm with a learned temperature): sharp from the start instead of near "
                              "uniform over the image tokens (Sort-of-CLEVR recipe: +1.9 points test, +4.1 "
                              "non-relational; benchmarks/RESULTS.md). false: scaled dot product.")
    qk_scale: float = opt(10.0, "Initial scale of the cosine attention logits (qk_norm=true; learned per head).",
                          min=0.1)
    share_cross: bool = opt(False, "Reuse one pair of cross-attention modules in every cross-modal layer "
                                   "(parameter reuse).")
    fusion: str = opt("gate", "Pooled text h and image v: gate = sigmoid(W[h; v] + b) * h + (1 - gate) * v; sum = h + v.",
                      choices=("gate", "sum"))
    ffn: str = opt("moe", "Feed-forward of the cross-modal layers: top-k mixture of experts or one dense MLP.",
                   choices=("moe", "dense"))
    experts: int = opt(4, "Experts per MoE layer (ffn=moe).", min=1)
    top_k: int = opt(2, "Experts active per token (ffn=moe).", min=1)
    capacity_factor: float = opt(1.25, "Expert capacity = ceil(factor x tokens x top_k / experts); tokens over "
                                       "capacity skip the expert (the residual carries them). 0: no limit.", min=0.0)
    ffn_mult: int = opt(2, "Hidden size of each expert (and of the dense FFN) as a multiple of dim.", min=1)
    balance_weight: float = opt(0.01, "Weight of the load-balancing loss (loss key `balance`, Switch Transformer form: "
                                      "experts x sum_e tokens_share_e x mean_router_prob_e, 1.0 when balanced).",
                                min=0.0)
    align_weight: float = opt(0.05, "Weight of the image-text InfoNCE on pooled unimodal embeddings (loss key "
                                    "`align`). 0: off.", min=0.0)
    align_temp: float = opt(0.1, "Temperature of the InfoNCE.", min=1e-3)
    align_weighting: bool = opt(False, "Weight each sample's answer loss by its image-question cosine alignment, "
                                       "clamped to [0.7, 1.0] (no gradient through the weight).")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        if self.deform_layers > self.late_blocks:
            raise ConfigError(f"{prefix}.deform_layers: {self.deform_layers} exceeds late_blocks={self.late_blocks}")
        if self.ffn == "moe" and self.top_k > self.experts:
            raise ConfigError(f"{prefix}.top_k: {self.top_k} exceeds experts={self.experts}")


R1MM_FLAVORS = {
    # the late (deformable) stage runs on the 5x5 grid: DeformConv2d's CPU kernel is the costliest layer
    "tiny": {"dim": 64, "heads": 4, "text_layers": 2, "channels": [16, 24, 32, 48], "late_blocks": 2,
             "deform_layers": 1, "cross_layers": 2, "experts": 4, "top_k": 2},
    "small": {"dim": 128, "heads": 4, "text_layers": 3, "channels": [24, 32, 64, 96], "late_blocks": 2,
              "deform_layers": 1, "cross_layers": 3, "experts": 8, "top_k": 2},
    "base": {"dim": 256, "heads": 8, "text_layers": 4, "channels": [32, 64, 128, 192], "late_blocks": 3,
             "deform_layers": 2, "cross_layers": 4, "experts": 8, "top_k": 2},
}


@dataclass
class CNNMLPConfig(MMBaseConfig):
    hidden: int = opt(256, "Hidden units of the answer MLP.", min=1)
    image_pool: str = opt("flatten", "Image feature: the flattened last feature map (the Relation Network paper's "
                                     "CNN+MLP) or its global mean (loses position).", choices=("flatten", "mean"))
    img_size: int = opt(0, "Input image side (the flattened features depend on it). 0: from the data (75 without).",
                        min=0)


CNNMLP_FLAVORS = {
    "tiny": {"dim": 64, "heads": 4, "text_layers": 2, "channels": [24, 24, 24, 24], "hidden": 256},
    "small": {"dim": 128, "heads": 4, "text_layers": 2, "channels": [24, 24, 24, 24], "hidden": 256},
    "base": {"dim": 256, "heads": 8, "text_layers": 3, "channels": [32, 64, 128, 256], "hidden": 512},
}


@dataclass
class CNNRNConfig(MMBaseConfig):
    g_hidden: int = opt(256, "Width of the pair function g (applied to every object pair).", min=1)
    g_layers: int = opt(4, "Layers of g.", min=1)
    f_hidden: int = opt(256, "Width of the answer function f over the summed pair features.", min=1)


CNNRN_FLAVORS = {  # the paper's CNN: 4 stride-2 convs of 24 channels (75 -> 5x5 = 25 objects)
    "tiny": {"dim": 64, "heads": 4, "text_layers": 2, "channels": [24, 24, 24, 24], "g_hidden": 128, "g_layers": 3,
             "f_hidden": 128},
    "small": {"dim": 128, "heads": 4, "text_layers": 2, "channels": [24, 24, 24, 24], "g_hidden": 256, "g_layers": 4,
              "f_hidden": 256},
    "base": {"dim": 128, "heads": 4, "text_layers": 2, "channels": [32, 64, 128, 256], "g_hidden": 256,
             "g_layers": 4, "f_hidden": 256},
}


@dataclass
class SortOfClevrConfig(DataConfig):
    name: str = opt("sort_of_clevr", "Dataset kind.")
    train_images: int = opt(10000, "Training images (each with 10 relational + 10 non-relational questions).", min=1)
    val_images: int = opt(500, "Validation images.", min=1)
    test_images: int = opt(1000, "Test images.", min=1)
    img_size: int = opt(75, "Side of the square images.", min=32)
    object_size: int = opt(4, "Half side of a square / radius of a circle, in pixels at img_size 75 (scaled with it).",
                           min=1)
    seed: int = opt(0, "Seed of the generated scenes and questions (independent of run.seed): fixed splits.", min=0)
    questions: str = opt("all", "Questions kept: all, relational only or non-relational only.",
                         choices=("all", "relational", "nonrelational"))
    tokenizer: str = opt("char", "Question tokenizer, built from the question templates.", choices=("char", "bpe"))
    vocab_size: int = opt(400, "BPE vocabulary size (tokenizer=bpe; the byte alphabet alone is 256).", min=257)
    eda: float = opt(0.0, "Share of training questions replaced by an EDA version (synonym replacement, random "
                          "insertion/swap/deletion of words that are not colours, shapes, relations or counts).",
                     min=0.0, max=1.0)
    group: int = opt(1, "Training questions per item: k > 1 puts k questions about one image in an item, so the image "
                        "is encoded once for k questions (data.batch_size counts items: batch_size x k questions "
                        "per step). Must divide the questions kept per image (20, or 10 with questions=relational/"
                        "nonrelational). Evaluation always asks one question per item.", min=1)
    eda_variants: int = opt(8, "EDA versions prepared per question template (data.eda > 0).", min=1)


variant(ModelConfig, "r1_mm", flavors=R1MM_FLAVORS)(R1MMConfig)
variant(ModelConfig, "mm_cnn_mlp", flavors=CNNMLP_FLAVORS)(CNNMLPConfig)
variant(ModelConfig, "mm_cnn_rn", flavors=CNNRN_FLAVORS)(CNNRNConfig)
variant(DataConfig, "sort_of_clevr")(SortOfClevrConfig)

from r1.models.mm import vqa_config  # noqa: E402,F401  (the real-image data kinds: vqa_voc, vqa_coco, mm_jsonl)
