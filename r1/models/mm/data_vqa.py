"""Visual questions from detection annotations: every VOC or COCO dataset becomes a multimodal one.

`data.name=vqa_voc` / `vqa_coco` read the dataset with the detection readers (r1/models/det/data.py:
same layouts, splits, class lists, skipped/unreadable counts) and ask, per image, templated questions
whose answers come from the boxes:

    count    "how many <class> are there?"           0 .. max_count-1, or "<max_count>+"
    exists   "is there a <class>?"                    yes / no
    largest  "what is the largest object?"           the class of the largest box (by area)
    smallest "what is the smallest object?"          the class of the smallest box
    most     "which class is most frequent?"         the class with the most boxes
    compare  "are there more <a> than <b>?"          yes / no

Per-class questions (count, exists, compare: every pair) ask about every class present in the image
plus `data.absent_classes` absent ones; largest/smallest/most are skipped where boxes tie (no single
answer). Each template has two phrasings; the phrasing, the absent classes and (with
`data.questions_per_image`) the kept questions are drawn per image from (data.seed, split, index):
the questions are fixed for a dataset and seed. The answer vocabulary is fixed: yes, no, the class
names, the counts. Images are stretched to img_size x img_size (PIL bilinear, as the predictor does).

Items are `((image, tokens, mask), (answer, qtype))` as for Sort-of-CLEVR, or None when an image
fails to decode (counted once per file, skipped by `vqa_collate`).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from r1.data import DataBundle, register_data
from r1.data.unreadable import UNREADABLE
from r1.errors import DataError
from r1.models.lm.tokenizer import BPETokenizer, CharTokenizer
from r1.models.mm.data import PAD, collate, token_table, vqa_meta
from r1.models.mm.vqa_config import VQACOCOConfig, VQADetConfig, VQAVOCConfig

log = logging.getLogger(__name__)

QUESTION_TYPES = ["count", "exists", "largest", "smallest", "most", "compare"]
COUNT_TYPES = [0]
TEMPLATES = {  # two phrasings each; {a}, {b} are class names
    "count": ("how many {a} are there?", "how many {a} are in the image?"),
    "exists": ("is there a {a}?", "is there a {a} in the image?"),
    "largest": ("what is the largest object?", "which object is the biggest?"),
    "smallest": ("what is the smallest object?", "which object is the tiniest?"),
    "most": ("which class is most frequent?", "what is the most common object?"),
    "compare": ("are there more {a} than {b}?", "are there more {a} than {b} in the image?"),
}
LEVEL = {"exists": 0, "largest": 1, "smallest": 1, "most": 1, "compare": 1, "count": 2}  # curriculum difficulty
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # natural images: ImageNet statistics


# ----------------------------------------------------------------------------- images
def load_resized(path, size: int) -> torch.Tensor:
    """An image file -> uint8 (3, size, size), stretched with PIL bilinear (the predictor's resize)."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class ImageQuestions(Dataset):
    """Questions about image files: item i asks text `text_of[i]` about `paths[image_of[i]]`."""

    def __init__(self, paths: list, image_of: list[int], text_of: list[int], answer: list[int], qtype: list[int],
                 table: torch.Tensor, mask: torch.Tensor, img_size: int, mean: list[float], std: list[float],
                 cache: bool, difficulty: list[float] | None = None):
        self.paths, self.img_size, self.cache = list(paths), img_size, {} if cache else None
        self.image_of = torch.tensor(image_of, dtype=torch.long)
        self.text_of = torch.tensor(text_of, dtype=torch.long)
        self.answer = torch.tensor(answer, dtype=torch.long)
        self.qtype = torch.tensor(qtype, dtype=torch.long)
        if difficulty is not None:  # r1.train.curriculum orders items by it
            self.difficulty = torch.tensor(difficulty, dtype=torch.float32)
        self.table, self.mask = table, mask
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.answer)

    def image(self, k: int) -> torch.Tensor | None:
        if self.cache is not None and k in self.cache:
            return self.cache[k]
        try:
            img = load_resized(self.paths[k], self.img_size)
        except (OSError, ValueError, SyntaxError) as err:
            UNREADABLE.note(self.paths[k], err)
            return None
        if self.cache is not None:
            self.cache[k] = img
        return img

    def __getitem__(self, i: int):
        img = self.image(int(self.image_of[i]))
        if img is None:
            return None
        t = self.text_of[i]
        return ((img.float() / 255.0 - self.mean) / self.std, self.table[t], self.mask[t]), \
            (self.answer[i], self.qtype[i])


def vqa_collate(items: list):
    """`collate` over the items whose image decoded; None when none did (the trainer skips it)."""
    items = [it for it in items if it is not None]
    return collate(items) if items else None


def build_tokenizer(kind: str, vocab_size: int, texts: list[str]):
    if kind == "bpe":
        return BPETokenizer.train(texts * 2, vocab_size, specials=[PAD], min_frequency=1)
    return CharTokenizer.train(texts, specials=[PAD])


# ----------------------------------------------------------------------------- questions
def class_words(classes: list[str]) -> list[str]:
    """Class names as they appear in questions and answers: lower case, '_' as a space."""
    return [c.replace("_", " ").strip().lower() for c in classes]


def answer_vocabulary(words: list[str], max_count: int) -> tuple[list[str], list[str]]:
    """(answers, class answers): yes, no, the classes, '0' .. 'max_count-1', '<max_count>+'. A class
    named like another answer ('yes', '3') answers as 'class <name>'."""
    counts = [str(i) for i in range(max_count)] + [f"{max_count}+"]
    reserved = {"yes", "no", *counts}
    named = [f"class {w}" if w in reserved else w for w in words]
    if len(set(named)) != len(named):
        dup = sorted({w for w in named if named.count(w) > 1})
        raise DataError(f"data.classes: class names {dup} are the same question word (lower case, '_' as space)")
    return ["yes", "no", *named, *counts], named


def image_questions(labels: np.ndarray, areas: np.ndarray, n_classes: int, cfg: VQADetConfig,
                    rng: np.random.Generator) -> list[tuple[str, int, tuple, object]]:
    """The questions of one image: (type, phrasing, class indices in the text, answer) where the answer
    is a count (int), a bool, or a class index wrapped in a 1-tuple."""
    counts = np.bincount(labels, minlength=n_classes)
    present = np.flatnonzero(counts).tolist()
    absent = np.flatnonzero(counts == 0)
    extra = rng.choice(absent, min(cfg.absent_classes, len(absent)), replace=False).tolist() if len(absent) else []
    asked = sorted(present + extra)
    out = []
    phrase = lambda: int(rng.integers(2))  # noqa: E731
    for c in asked:
        out.append(("count", phrase(), (c,), int(counts[c])))
        out.append(("exists", phrase(), (c,), bool(counts[c])))
    for kind, values in (("largest", areas), ("smallest", -areas)):
        if len(labels):
            top = np.unique(labels[values == values.max()])
            if len(top) == 1:
                out.append((kind, phrase(), (), (int(top[0]),)))
    if len(labels):
        top = np.flatnonzero(counts == counts.max())
        if len(top) == 1:
            out.append(("most", phrase(), (), (int(top[0]),)))
    for i, a in enumerate(asked):
        for b in asked[i + 1:]:
            a_, b_ = (a, b) if rng.integers(2) else (b, a)
            out.append(("compare", phrase(), (a_, b_), bool(counts[a_] > counts[b_])))
    if cfg.questions_per_image and len(out) > cfg.questions_per_image:
        keep = np.sort(rng.choice(len(out), cfg.questions_per_image, replace=False))
        out = [out[k] for k in keep]
    return out


def question_text(kind: str, phrasing: int, classes: tuple, words: list[str]) -> str:
    names = dict(zip("ab", (words[c] for c in classes)))
    return TEMPLATES[kind][phrasing].format(**names)


def answer_index(answer, answers: list[str], named: list[str], max_count: int) -> int:
    if isinstance(answer, bool):
        return answers.index("yes" if answer else "no")
    if isinstance(answer, tuple):
        return answers.index(named[answer[0]])
    return answers.index(str(answer) if answer < max_count else f"{max_count}+")


def tokenizer_texts(words: list[str]) -> list[str]:
    """Every template with every class (compare: each class next to its neighbour in both slots)."""
    texts = []
    for phrasings in TEMPLATES.values():
        for p in phrasings:
            if "{a}" not in p:
                texts.append(p)
                continue
            for i, a in enumerate(words):
                b = words[(i + 1) % len(words)]
                texts += [p.format(a=a, b=b), p.format(a=b, b=a)] if "{b}" in p else [p.format(a=a)]
    return texts


def split_questions(records: list, split: int, words: list[str], answers: list[str], named: list[str],
                    cfg: VQADetConfig) -> dict[str, list]:
    """Questions of one split: per item image index, question text, answer index, type index."""
    out = {"paths": [r.path for r in records], "image_of": [], "text": [], "answer": [], "qtype": []}
    for k, rec in enumerate(records):
        boxes = np.asarray(rec.boxes, np.float32).reshape(-1, 4)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        rng = np.random.default_rng([cfg.seed, split, k])
        for kind, phrasing, cls, answer in image_questions(np.asarray(rec.labels, np.int64), areas, len(words),
                                                           cfg, rng):
            out["image_of"].append(k)
            out["text"].append(question_text(kind, phrasing, cls, words))
            out["answer"].append(answer_index(answer, answers, named, cfg.max_count))
            out["qtype"].append(QUESTION_TYPES.index(kind))
    return out


def questions_bundle(cfg: VQADetConfig, det, name: str) -> DataBundle:
    """A detection DataBundle (its records and classes) -> the question-answering bundle."""
    classes = det.meta["classes"]
    words = class_words(classes)
    answers, named = answer_vocabulary(words, cfg.max_count)
    parts = [None if ds is None else split_questions(ds.records, s, words, answers, named, cfg)
             for s, ds in enumerate((det.train, det.val, det.test))]
    if not parts[0]["answer"]:
        raise DataError(f"data.name={name} (data.root={cfg.root}): no question in the training split "
                        "(data.absent_classes=0 and no boxes?)")
    texts = sorted({t for p in parts if p is not None for t in p["text"]})
    tok = build_tokenizer(cfg.tokenizer, cfg.vocab_size, tokenizer_texts(words))
    table, mask = token_table(tok, texts)
    index = {t: i for i, t in enumerate(texts)}
    sets = [None if p is None else ImageQuestions(
        p["paths"], p["image_of"], [index[t] for t in p["text"]], p["answer"], p["qtype"], table, mask,
        cfg.img_size, MEAN, STD, cfg.cache, [LEVEL[QUESTION_TYPES[q]] for q in p["qtype"]]) for p in parts]
    majority = int(torch.bincount(sets[0].answer, minlength=len(answers)).argmax())
    meta = vqa_meta(tok, answers, table.shape[1], cfg.img_size, majority, QUESTION_TYPES, [], COUNT_TYPES,
                    tokenizer_texts(words))
    meta["preprocess"].update(mean=MEAN, std=STD)
    meta.update(dataset=name, object_classes=list(classes), max_count=cfg.max_count)
    stats = {**det.stats, "train_questions": len(sets[0])}
    log.info("%s: %s questions (train/val/test), %d answers, %d question texts", name,
             "/".join(str(len(s)) if s is not None else "-" for s in sets), len(answers), len(texts))
    return DataBundle(*sets, family="mm", meta=meta, collate=vqa_collate, stats=stats)


@register_data("vqa_voc", VQAVOCConfig)
def vqa_voc(cfg: VQAVOCConfig, seed: int) -> DataBundle:
    """Questions from a Pascal VOC layout (the `voc` kind's reader, splits and class list)."""
    from r1.models.det.config import VOCConfig
    from r1.models.det.data import voc

    det = voc(VOCConfig(root=cfg.root, train_split=cfg.train_split, val_split=cfg.val_split,
                        test_split=cfg.test_split, skip_difficult=cfg.skip_difficult, classes=list(cfg.classes)),
              seed)
    return questions_bundle(cfg, det, "vqa_voc")


@register_data("vqa_coco", VQACOCOConfig)
def vqa_coco(cfg: VQACOCOConfig, seed: int) -> DataBundle:
    """Questions from COCO JSON annotations (the `coco` kind's reader, including the voc2coco layout)."""
    from r1.models.det.config import COCOConfig
    from r1.models.det.data import coco

    det = coco(COCOConfig(root=cfg.root, train_images=cfg.train_images, train_ann=cfg.train_ann,
                          val_images=cfg.val_images, val_ann=cfg.val_ann, test_images=cfg.test_images,
                          test_ann=cfg.test_ann, classes=list(cfg.classes)), seed)
    return questions_bundle(cfg, det, "vqa_coco")

