"""Config classes of the mm data kinds on real images (no torch here): questions generated from
detection annotations (`vqa_voc`, `vqa_coco`) and user JSONL files (`mm_jsonl`)."""
from __future__ import annotations

from dataclasses import dataclass

from r1.config import DataConfig, opt, variant
from r1.models.det.config import COCOLocation, VOCLocation


@dataclass
class MMImageDataConfig(DataConfig):
    """Fields of every mm kind that reads image files: images are stretched (no letterbox) to
    img_size x img_size with PIL bilinear, exactly as the mm predictor does at inference."""

    img_size: int = opt(128, "Side of the square network input; images are stretched to it (no letterbox), "
                             "as the predictor does.", min=32)
    tokenizer: str = opt("char", "Question tokenizer.", choices=("char", "bpe"))
    vocab_size: int = opt(400, "BPE vocabulary size (tokenizer=bpe; the byte alphabet alone is 256).", min=257)
    cache: bool = opt(True, "Keep each decoded, resized image in memory after its first use (3 x img_size^2 bytes "
                            "per image: ~49 KB at 128).")


@dataclass
class VQADetConfig(MMImageDataConfig):
    """Questions with answers from the boxes of a detection dataset."""

    seed: int = opt(0, "Seed of the questions drawn per image (phrasing, absent classes asked about, "
                       "question sampling); independent of run.seed: fixed questions.", min=0)
    classes: list[str] = opt([], "Class names in answer order. Empty: taken from the data (as the det kinds do).")
    max_count: int = opt(20, "Counting answers are 0 .. max_count-1 and the bucket '<max_count>+' (at least "
                             "max_count); count_mae/count_mse score the bucket as max_count.", min=1)
    absent_classes: int = opt(1, "Classes absent from an image that its per-class questions (count, exists, "
                                 "compare) also ask about, drawn per image.", min=0)
    questions_per_image: int = opt(0, "Questions kept per image, drawn from all the answerable ones. 0: all.",
                                   min=0)
    skip_difficult: bool = opt(False, "Drop objects marked difficult (VOC).")


@dataclass
class VQAVOCConfig(VOCLocation, VQADetConfig):
    name: str = opt("vqa_voc", "Dataset kind.")


@dataclass
class VQACOCOConfig(COCOLocation, VQADetConfig):
    name: str = opt("vqa_coco", "Dataset kind.")


@dataclass
class MMJsonlConfig(MMImageDataConfig):
    name: str = opt("mm_jsonl", "Dataset kind.")
    train: str = opt("", 'Training JSONL: one {"image": path relative to the file, "text": ..., "answer" or '
                         '"label": ..., optional "type": question type} per line.')
    val: str = opt("", "Validation JSONL (same format).")
    test: str = opt("", "Test JSONL (same format). Empty: no test split.")
    max_len: int = opt(64, "Longest text in tokens; longer texts are cut.", min=1)


variant(DataConfig, "vqa_voc")(VQAVOCConfig)
variant(DataConfig, "vqa_coco")(VQACOCOConfig)
variant(DataConfig, "mm_jsonl")(MMJsonlConfig)
