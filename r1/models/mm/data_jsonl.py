"""User image+text data: `data.name=mm_jsonl` with one JSONL file per split (`data.train`, `data.val`,
optional `data.test`), one example per line:

    {"image": "imgs/0001.jpg", "text": "what colour is the car?", "answer": "red"}
    {"image": "imgs/0002.jpg", "text": "a photo of a dog", "label": 3, "type": "caption"}

`image` is a path relative to the JSONL file (or absolute) that stays inside the JSONL file's folder
(the dataset-path rule, r1/data/formats.py: others are counted, skipped and never read), `answer` or `label` a string or an
integer: the answers form a vocabulary taken from the training file (image+text classification and
VQA are the same task here). The optional `type` groups questions: metrics report
`accuracy_<type>` per type seen in training. Texts are lower-cased and tokenised with a char or BPE
tokenizer trained on the training texts.

Unreadable or missing images follow ImageFolder's rules: checked up front, skipped, counted
(`data/skipped_images`) and logged with an example; a file that passes the check but fails to decode
mid-epoch is skipped and reported once. A val/test answer the training file never gives cannot be
predicted: it stays (scored wrong, ignored by the loss) and is counted in a warning. A malformed line
is a DataError naming file:line and the allowed form.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from r1.data import DataBundle, register_data
from r1.data.formats import DatasetPaths, readable_image
from r1.errors import DataError
from r1.models.mm.data import PAD, vqa_meta
from r1.models.mm.data_vqa import MEAN, STD, ImageQuestions, build_tokenizer, vqa_collate
from r1.models.mm.vqa_config import MMJsonlConfig

log = logging.getLogger(__name__)

EXPECTED = ('expected one JSON object per line: {"image": path relative to the file, "text": string, '
            '"answer" or "label": string or integer, optionally "type": string}')
UNKNOWN_ANSWER = -100  # cross-entropy's ignore_index: never the argmax, so scored wrong


def parse_line(line: str, where: str, base: Path) -> dict:
    """One JSONL line -> {"image": Path, "text", "answer", "type"}; DataError naming `where` otherwise."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: invalid JSON ({err.msg}); {EXPECTED}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a JSON {type(obj).__name__}, not an object; {EXPECTED}")
    unknown = sorted(set(obj) - {"image", "text", "answer", "label", "type"})
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; {EXPECTED}")
    if "answer" in obj and "label" in obj:
        raise DataError(f"{where}: both 'answer' and 'label'; give one; {EXPECTED}")
    for key in ("image", "text"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            got = "missing" if key not in obj else f"got {obj[key]!r:.40}"
            raise DataError(f"{where}: '{key}' must be a non-empty string ({got}); {EXPECTED}")
    answer = obj.get("answer", obj.get("label"))
    if isinstance(answer, bool) or not isinstance(answer, (str, int)) or not str(answer).strip():
        got = "missing" if answer is None else f"got {answer!r:.40}"
        raise DataError(f"{where}: 'answer'/'label' must be a non-empty string or an integer ({got}); {EXPECTED}")
    kind = obj.get("type")
    if kind is not None and (not isinstance(kind, str) or not kind.strip()):
        raise DataError(f"{where}: 'type' must be a non-empty string, got {kind!r:.40}; {EXPECTED}")
    return {"image": base / obj["image"], "text": obj["text"].strip().lower(), "answer": str(answer).strip(),
            "type": kind.strip() if kind else None}


def read_jsonl(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        raise DataError(f"data.{key}: JSONL file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err}); {EXPECTED}") from None
    rows = [parse_line(line, f"{path}:{n}", path.parent) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise DataError(f"{path}: no examples (empty file); {EXPECTED}")
    return rows


def drop_outside(rows: list[dict], path: Path) -> tuple[list[dict], int]:
    """Rows whose image stays inside the JSONL file's folder (the dataset-path rule); the others counted."""
    rule = DatasetPaths(path.parent)
    ok = {p: rule.file(p) is not None for p in dict.fromkeys(r["image"] for r in rows)}
    rule.warn(f"{path}:")
    return [r for r in rows if ok[r["image"]]], len(rule.outside)


def drop_unreadable(rows: list[dict], path: Path) -> tuple[list[dict], int]:
    """Rows whose image opens and verifies; skipped images (missing, not an image) counted and logged."""
    ok = {p: readable_image(str(p)) for p in dict.fromkeys(r["image"] for r in rows)}
    skipped = [p for p, good in ok.items() if not good]
    if skipped:
        log.warning("%s: skipped %d unreadable or missing image(s), e.g. %s", path, len(skipped), skipped[0])
    return [r for r in rows if ok[r["image"]]], len(skipped)


def encode_table(tok, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> ids (N, T) padded with PAD and mask (N, T); cut at max_len; a text with no known token
    keeps one PAD position (so attention always has a key)."""
    pad = tok.token_to_id(PAD)
    ids = [tok.encode(t)[:max_len] or [pad] for t in texts]
    width = max(len(i) for i in ids)
    table = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for r, i in enumerate(ids):
        table[r, :len(i)] = torch.tensor(i)
        mask[r, :len(i)] = True
    return table, mask


@register_data("mm_jsonl", MMJsonlConfig)
def mm_jsonl(cfg: MMJsonlConfig, seed: int) -> DataBundle:
    """Image+text examples from JSONL files; answers are the training file's distinct answers (sorted)."""
    for key in ("train", "val"):
        if not getattr(cfg, key):
            raise DataError(f"data.{key}: required for data.name=mm_jsonl (a JSONL file: {EXPECTED})")
    files = {k: Path(getattr(cfg, k)) for k in ("train", "val", "test") if getattr(cfg, k)}
    splits, skipped, outside = {}, 0, 0
    for key, path in files.items():
        rows, out = drop_outside(read_jsonl(path, key), path)
        rows, n = drop_unreadable(rows, path)
        skipped, outside = skipped + n, outside + out
        if not rows:
            raise DataError(f"{path}: no example with a readable image ({n} unreadable or missing image(s)"
                            + (f", {out} outside the file's folder)" if out else ")"))
        splits[key] = rows
    train = splits["train"]
    answers = sorted({r["answer"] for r in train})
    types = sorted({r["type"] for r in train if r["type"] is not None})
    tok = build_tokenizer(cfg.tokenizer, cfg.vocab_size, [r["text"] for r in train])
    texts = sorted({r["text"] for rows in splits.values() for r in rows})
    table, mask = encode_table(tok, texts, cfg.max_len)
    index, a_index, t_index = ({t: i for i, t in enumerate(xs)} for xs in (texts, answers, types))
    sets = {}
    for key, rows in splits.items():
        paths = list(dict.fromkeys(r["image"] for r in rows))
        p_index = {p: i for i, p in enumerate(paths)}
        unknown = sum(r["answer"] not in a_index for r in rows)
        if unknown:
            log.warning("%s: %d of %d examples have an answer the training file never gives (scored wrong)",
                        files[key], unknown, len(rows))
        sets[key] = ImageQuestions(
            paths, [p_index[r["image"]] for r in rows], [index[r["text"]] for r in rows],
            [a_index.get(r["answer"], UNKNOWN_ANSWER) for r in rows], [t_index.get(r["type"], -1) for r in rows],
            table, mask, cfg.img_size, MEAN, STD, cfg.cache)
    majority = int(torch.bincount(sets["train"].answer, minlength=len(answers)).argmax())
    meta = vqa_meta(tok, answers, table.shape[1], cfg.img_size, majority, types, [], [], [r["text"] for r in train])
    meta["preprocess"].update(mean=MEAN, std=STD)
    meta["dataset"] = "mm_jsonl"
    stats = {"skipped_images": skipped, "train_examples": len(sets["train"]), **({"outside_root_images": outside} if outside else {})}
    return DataBundle(sets["train"], sets["val"], sets.get("test"), family="mm", meta=meta, collate=vqa_collate,
                      stats=stats)
