"""Sort-of-CLEVR (Santoro et al. 2017, arXiv 1706.01427, section 5.3), generated in code.

Each 75x75 image shows the 6 colours once each, as a square or a circle, on a white background.
Per image: 10 non-relational questions (shape of the <c> object; is it on the left; is it at the
top) and 10 relational ones (shape of the object closest to / furthest from the <c> object; how
many objects have its shape), written as natural-language templates and tokenised with the R1-LM
tokenizers. Answers come from a fixed vocabulary of 10 (yes, no, square, circle, 1..6).

Objects sit in 6 distinct cells of a 5x5 grid, jittered inside their cell, so they never overlap;
the generation is vectorised numpy seeded by `data.seed` and split (train/val/test differ), cached
in memory: 10,000 images render in ~1-2 s.

Items are `((image (3, H, W) float normalised, token ids (T,), mask (T,) bool), (answer, qtype))`;
`collate` returns `({"images", "tokens", "mask"}, {"answer", "qtype"})`. The data meta holds what
inference needs: the tokenizer, `answers`, `preprocess`, `max_len`, question types.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from r1.data import DataBundle, register_data
from r1.errors import ConfigError
from r1.models.lm.tokenizer import BPETokenizer, CharTokenizer, word_vocabulary
from r1.models.mm.config import SortOfClevrConfig
from r1.models.mm.eda import variants

COLOURS = ["red", "green", "blue", "orange", "gray", "yellow"]
RGB = np.array([(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 150, 0), (128, 128, 128), (235, 235, 0)], np.uint8)
SHAPES = ["square", "circle"]
ANSWERS = ["yes", "no", "square", "circle", "1", "2", "3", "4", "5", "6"]
QUESTION_TYPES = ["shape", "left", "top", "closest", "furthest", "count"]
RELATIONAL = [3, 4, 5]
COUNT_TYPES = [5]
TEMPLATES = [  # two phrasings per question type, {c} is a colour
    ("what is the shape of the {c} object?", "what shape is the {c} object?"),
    ("is the {c} object on the left of the image?", "is the {c} object in the left half?"),
    ("is the {c} object at the top of the image?", "is the {c} object in the upper half?"),
    ("what is the shape of the object closest to the {c} object?",
     "what shape is the object nearest to the {c} object?"),
    ("what is the shape of the object furthest from the {c} object?",
     "what shape is the object farthest from the {c} object?"),
    ("how many objects have the same shape as the {c} object?", "how many objects share the shape of the {c} object?"),
]
PAD = "<|pad|>"
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
GRID = 5  # objects occupy distinct cells of a GRID x GRID layout
N_OBJECTS = len(COLOURS)
PER_IMAGE = 10  # questions of each kind (relational, non-relational) per image


def question_text(qtype: int, variant: int, colour: int) -> str:
    return TEMPLATES[qtype][variant].format(c=COLOURS[colour])


def all_questions() -> list[str]:
    """Every question string, indexed by (qtype * 2 + variant) * 6 + colour."""
    return [question_text(t, v, c) for t in range(len(TEMPLATES)) for v in range(2) for c in range(N_OBJECTS)]


# ----------------------------------------------------------------------------- scenes
def make_scenes(n: int, img_size: int, object_size: float, rng: np.random.Generator) -> dict:
    """n scenes: centres (n, 6, 2) as (x, y) pixels, shapes (n, 6) (0 square, 1 circle); object k has colour k."""
    cell = img_size / GRID
    cells = np.argsort(rng.random((n, GRID * GRID)), axis=1)[:, :N_OBJECTS]
    row, col = cells // GRID, cells % GRID
    room = max(cell - 2 * object_size - 2, 0.0)  # jitter that keeps the object inside its cell
    jitter = rng.random((n, N_OBJECTS, 2)) * room + object_size + 1 + (cell - 2 * object_size - 2 - room) / 2
    centres = np.stack([col * cell, row * cell], -1) + jitter
    shapes = rng.integers(0, 2, (n, N_OBJECTS))
    return {"centres": centres.astype(np.float32), "shapes": shapes}


def render(centres: np.ndarray, shapes: np.ndarray, img_size: int, object_size: float,
           chunk: int = 500) -> np.ndarray:
    """Scenes -> uint8 images (n, 3, H, W), white background."""
    n = len(centres)
    out = np.full((n, img_size, img_size, 3), 255, np.uint8)
    pix = np.arange(img_size, dtype=np.float32) + 0.5
    for s in range(0, n, chunk):
        c, sh, img = centres[s:s + chunk], shapes[s:s + chunk], out[s:s + chunk]
        for k in range(N_OBJECTS):
            dx = np.abs(pix[None, None, :] - c[:, k, 0, None, None])  # (b, 1, W)
            dy = np.abs(pix[None, :, None] - c[:, k, 1, None, None])  # (b, H, 1)
            square = np.maximum(dx, dy) <= object_size
            circle = dx ** 2 + dy ** 2 <= object_size ** 2
            mask = np.where(sh[:, k, None, None] == 0, square, circle)
            img[mask] = RGB[k]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def answer_questions(centres: np.ndarray, shapes: np.ndarray, qtype: np.ndarray, colour: np.ndarray,
                     img_size: int) -> np.ndarray:
    """Answer indices (into ANSWERS) of questions (n, q) about scenes (n, 6)."""
    n = len(centres)
    rows = np.arange(n)[:, None]
    d = np.linalg.norm(centres[:, :, None] - centres[:, None, :], axis=-1)  # (n, 6, 6)
    d_self = d[rows, colour]  # (n, q, 6): distances from the asked-about object
    closest = np.where(np.arange(N_OBJECTS) == colour[..., None], np.inf, d_self).argmin(-1)
    furthest = d_self.argmax(-1)
    shape_of = lambda obj: shapes[rows, obj]  # noqa: E731
    x, y = centres[rows, colour, 0], centres[rows, colour, 1]
    count = (shapes[:, None, :] == shape_of(colour)[..., None]).sum(-1)  # 1..6, the object itself included
    yes, no = ANSWERS.index("yes"), ANSWERS.index("no")
    shape_answer = lambda obj: ANSWERS.index("square") + shape_of(obj)  # noqa: E731
    table = np.stack([shape_answer(colour), np.where(x < img_size / 2, yes, no), np.where(y < img_size / 2, yes, no),
                      shape_answer(closest), shape_answer(furthest), ANSWERS.index("1") + count - 1])
    return np.take_along_axis(table, qtype[None], 0)[0]


def make_questions(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image 10 non-relational then 10 relational questions: (qtype, variant, colour), each (n, 20)."""
    nonrel = rng.integers(0, 3, (n, PER_IMAGE))
    rel = rng.integers(3, 6, (n, PER_IMAGE))
    qtype = np.concatenate([nonrel, rel], 1)
    return qtype, rng.integers(0, 2, qtype.shape), rng.integers(0, N_OBJECTS, qtype.shape)


_CACHE: dict[tuple, dict] = {}


def generate_split(n: int, img_size: int, object_size: int, seed: int, split: int) -> dict:
    """One split, cached in memory: images (n, 3, H, W) uint8, scenes and questions. `split` 0/1/2 =
    train/val/test (independent random streams)."""
    key = (n, img_size, object_size, seed, split)
    if key not in _CACHE:
        rng = np.random.default_rng([seed, split])
        size = object_size * img_size / 75.0
        scenes = make_scenes(n, img_size, size, rng)
        qtype, variant, colour = make_questions(n, rng)
        answers = answer_questions(scenes["centres"], scenes["shapes"], qtype, colour, img_size)
        if len(_CACHE) >= 6:  # a few configurations at a time (a 10,000-image split is ~170 MB)
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = {**scenes, "images": torch.from_numpy(render(scenes["centres"], scenes["shapes"], img_size,
                                                                   size)),
                       "qtype": qtype, "variant": variant, "colour": colour, "answers": answers}
    return _CACHE[key]


# ----------------------------------------------------------------------------- tokens and items
def build_tokenizer(kind: str, vocab_size: int, extra_texts: list[str] = ()):
    texts = all_questions() + list(extra_texts)
    if kind == "bpe":
        return BPETokenizer.train(texts * 2, vocab_size, specials=[PAD], min_frequency=1)
    return CharTokenizer.train(texts, specials=[PAD])


def token_table(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded texts, padded: ids (N, T) and mask (N, T) bool."""
    ids = [tok.encode(t) for t in texts]
    width = max(len(i) for i in ids)
    pad = tok.token_to_id(PAD)
    table = torch.full((len(ids), width), pad, dtype=torch.long)
    for r, i in enumerate(ids):
        table[r, :len(i)] = torch.tensor(i)
    return table, table != pad


class QuestionImages(Dataset):
    """Questions about the images of one split, `group` questions of one image per item: item i asks
    questions `rows[i]` (indices into `qidx`, `answer`, `qtype`) about image `image_of[rows[i, 0]]`.
    group 1: one (image, question) pair per item. group k > 1: the image is decoded once for k of its
    questions (its kept questions ordered by type, then cut in chunks of k), and the model encodes it
    once for all k (training cost per question falls with k)."""

    def __init__(self, split: dict, keep: np.ndarray, table: torch.Tensor, mask: torch.Tensor,
                 eda: float = 0.0, eda_variants: int = 0, group: int = 1):
        """`eda`: probability that a question is replaced by one of its `eda_variants` EDA versions
        (table rows after the originals: question q's j-th at n_questions + q * k + j). The draw uses
        torch's global RNG, which the trainer seeds per item (exact resume)."""
        n_img, q = split["qtype"].shape
        per_image = int(keep[0].sum()) if n_img else 0
        if group < 1 or (per_image and per_image % group) or not (keep.sum(1) == per_image).all():
            raise ConfigError(f"data.group: {group} must divide the questions kept per image ({per_image})")
        self.eda, self.eda_variants, self.n_questions = eda, eda_variants, len(all_questions())
        self.group = group
        flat = np.flatnonzero(keep.reshape(-1))
        self.images = split["images"]
        self.image_of = torch.from_numpy(flat // q)
        self.qidx = torch.from_numpy(((split["qtype"] * 2 + split["variant"]) * N_OBJECTS
                                      + split["colour"]).reshape(-1)[flat])
        self.answer = torch.from_numpy(split["answers"].reshape(-1)[flat])
        self.qtype = torch.from_numpy(split["qtype"].reshape(-1)[flat])
        order = np.lexsort((self.qtype.numpy(), self.image_of.numpy())) if group > 1 else np.arange(len(flat))
        self.rows = torch.from_numpy(order).view(-1, group)
        # curriculum order (r1.train.curriculum): non-relational questions first, then relational, counting last
        level = torch.tensor([float(t in RELATIONAL) + float(t in COUNT_TYPES) for t in range(len(QUESTION_TYPES))])
        self.difficulty = level[self.qtype][self.rows].amax(1)
        self.table, self.mask = table, mask
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        rows = self.rows[i]
        image = (self.images[self.image_of[rows[0]]].float() / 255.0 - self.mean) / self.std
        q = self.qidx[rows].clone()
        if self.eda > 0:
            swap = torch.rand(len(q)) < self.eda
            q[swap] = self.n_questions + q[swap] * self.eda_variants + torch.randint(self.eda_variants,
                                                                                     (int(swap.sum()),))
        if self.group == 1:
            return (image, self.table[q[0]], self.mask[q[0]]), (self.answer[rows[0]], self.qtype[rows[0]])
        return (image, self.table[q], self.mask[q]), (self.answer[rows], self.qtype[rows])


def collate(items: list):
    """Items -> ({"images" (B, 3, H, W), "tokens" (B * k, T), "mask" (B * k, T)},
    {"answer" (B * k,), "qtype" (B * k,)}), k the questions per item (rows i*k..i*k+k-1 ask about
    image i); padding is cut to the batch's longest question."""
    images, tokens, mask = (torch.stack(x) for x in zip(*(it[0] for it in items)))
    tokens, mask = tokens.view(-1, tokens.shape[-1]), mask.view(-1, mask.shape[-1])
    width = int(mask.sum(1).max())
    answer, qtype = (torch.stack(x).view(-1) for x in zip(*(it[1] for it in items)))
    return ({"images": images, "tokens": tokens[:, :width], "mask": mask[:, :width]},
            {"answer": answer, "qtype": qtype})


def vqa_meta(tok, answers: list[str], max_len: int, img_size: int, majority: int, question_types: list[str],
             relational: list[int], count_types: list[int], texts: list[str] = ()) -> dict:
    """The data meta of a question-answering kind (model.json): what inference and evaluation need;
    `texts` (the training questions) give `text.words`, the words the model knows (served questions
    without any get 422, others list their unknown words)."""
    text = {"lowercase": True, **({"words": word_vocabulary(texts, lowercase=True)} if texts else {})}
    return {"task": "vqa", "answers": answers, "classes": answers, "num_classes": len(answers),
            "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size, "pad_id": tok.token_to_id(PAD),
            "max_len": max_len, "img_size": img_size, "text": text,
            "preprocess": {"size": [img_size, img_size], "mean": MEAN, "std": STD, "resize": "bilinear"},
            "majority_answer": majority, "question_types": question_types, "relational_types": relational,
            "count_types": count_types}


@register_data("sort_of_clevr", SortOfClevrConfig)
def sort_of_clevr(cfg: SortOfClevrConfig, seed: int) -> DataBundle:
    """Sort-of-CLEVR generated in code (fixed splits by data.seed; run.seed does not change them)."""
    extra = [v for vs in variants(all_questions(), cfg.eda_variants, cfg.seed) for v in vs] if cfg.eda > 0 else []
    tok = build_tokenizer(cfg.tokenizer, cfg.vocab_size, extra)
    table, mask = token_table(tok, all_questions() + extra)
    sets = []
    for split, n in enumerate((cfg.train_images, cfg.val_images, cfg.test_images)):
        data = generate_split(n, cfg.img_size, cfg.object_size, cfg.seed, split)
        rel = np.isin(data["qtype"], RELATIONAL)
        keep = {"all": np.ones_like(rel), "relational": rel, "nonrelational": ~rel}[cfg.questions]
        eda = cfg.eda if split == 0 else 0.0  # evaluation asks the template questions
        group = cfg.group if split == 0 else 1  # evaluation: one question per item, like serving
        sets.append(QuestionImages(data, keep, table, mask, eda, cfg.eda_variants, group))
    majority = int(torch.bincount(sets[0].answer, minlength=len(ANSWERS)).argmax())
    meta = vqa_meta(tok, ANSWERS, table.shape[1], cfg.img_size, majority, QUESTION_TYPES, RELATIONAL, COUNT_TYPES,
                    all_questions() + extra)
    return DataBundle(*sets, family="mm", meta=meta, collate=collate,
                      stats={"train_images": cfg.train_images, "train_questions": len(sets[0].answer)})
