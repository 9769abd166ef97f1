"""`r1 data inspect`: statistics and findings for an image or text dataset.

`inspect(source)` returns one JSON-safe report: `stats` (counts, sizes, boxes, text measures),
`findings` (each {"check", "message"}: something a user should fix or at least know) and
`histograms` (name -> list of values, drawn by report.py).
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter

import numpy as np

from r1.data.imagehash import NEAR_DISTANCE, Signature
from r1.data.imagehash import duplicate_pairs as signature_pairs
from r1.data_tools.scan import ImageSet, read_images
from r1.data_tools.source import TEXT_EXTS, Source

log = logging.getLogger(__name__)

MAX_IMBALANCE = 5.0        # max/min images (or boxes) per class above this is flagged
COCO_AREAS = (32 ** 2, 96 ** 2)  # small < 32^2 <= medium < 96^2 <= large, in original pixels
MAX_NONPRINTABLE = 0.05    # share of undecodable bytes / control characters a text corpus may have
EXAMPLES = 10              # examples listed per finding


def _finding(check: str, message: str, examples: list | None = None) -> dict:
    return {"check": check, "message": message, "examples": (examples or [])[:EXAMPLES]}


def _summary(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return {}
    return {"min": float(v.min()), "median": float(np.median(v)), "mean": round(float(v.mean()), 3),
            "max": float(v.max())}


# ----------------------------------------------------------------------------- images
def duplicate_pairs(images: ImageSet, max_distance: int = NEAR_DISTANCE) -> list[tuple[int, int, str]]:
    """(i, j, "exact"|"near") over readable records, i < j: same bytes (or pixels), or dHash within
    max_distance bits and thumbnails that agree (the rule of `r1.data.imagehash`, which grouped
    splits use too)."""
    return signature_pairs([None if r.error else Signature(r.sha1, r.hash, r.thumb) for r in images.records],
                           max_distance)


def _class_counts(images: ImageSet) -> dict[str, dict[str, int]]:
    """split -> class -> images (classification) or boxes (detection), every class listed."""
    out: dict[str, dict[str, int]] = {}
    for r in images.records:
        per = out.setdefault(r.split, {c: 0 for c in images.classes})
        if r.error:
            continue
        for c in ([r.label] if images.task == "cls" else r.box_labels):
            per[c] = per.get(c, 0) + 1
    return out


def _imbalance(counts: dict[str, int]) -> float | None:
    have = [n for n in counts.values() if n > 0]
    return round(max(have) / min(have), 2) if len(have) > 1 else None


def _box_stats(images: ImageSet, findings: list, hist: dict) -> dict:
    recs = [r for r in images.records if not r.error]
    per_image = [len(r.boxes) for r in recs]
    boxes = np.concatenate([r.boxes for r in recs]) if recs else np.zeros((0, 4))
    wh = boxes[:, 2:] - boxes[:, :2]
    area = wh.prod(1)
    degenerate = int(((wh <= 0).any(1)).sum())
    outside = sum(int(((r.boxes[:, :2] < 0) | (r.boxes[:, 2:] > [r.width, r.height])).any(1).sum()) for r in recs)
    sizes = {"small": int((area < COCO_AREAS[0]).sum()),
             "medium": int(((area >= COCO_AREAS[0]) & (area < COCO_AREAS[1])).sum()),
             "large": int((area >= COCO_AREAS[1]).sum())}
    no_boxes = [r.name for r in recs if not len(r.boxes)]
    if degenerate:
        findings.append(_finding("degenerate_boxes", f"{degenerate} box(es) with zero or negative width/height "
                                 "(dropped when training)"))
    if outside:
        findings.append(_finding("boxes_outside", f"{outside} box(es) reach outside their image (clipped when training)"))
    if no_boxes:
        findings.append(_finding("images_without_boxes", f"{len(no_boxes)} image(s) have no box", no_boxes))
    hist["boxes per image"] = per_image
    hist["box side sqrt(area) px"] = np.sqrt(area.clip(0)).round(1).tolist()
    return {"boxes": int(len(boxes)), "per_image": _summary(per_image), "sizes_coco": sizes,
            "degenerate": degenerate, "outside_image": outside, "images_without_boxes": len(no_boxes)}


def _class_checks(images: ImageSet, findings: list) -> dict:
    """Counts per split and class, empty classes, and the training split's imbalance."""
    counts = _class_counts(images)
    totals = Counter()
    for per in counts.values():
        totals.update(per)
    unit = "images" if images.task == "cls" else "boxes"
    empty = [c for c in images.classes if totals[c] == 0]
    if empty:
        findings.append(_finding("empty_class", f"{len(empty)} class(es) without any readable {unit}: "
                                 f"{', '.join(empty)}", empty))
    split_empty = [f"{c} in {s}" for s, per in counts.items() for c, n in per.items() if n == 0 and c not in empty]
    if split_empty:
        findings.append(_finding("class_missing_in_split", f"{len(split_empty)} class/split pair(s) without {unit}",
                                 split_empty))
    basis = counts.get("train", dict(totals))  # the balance training sees (all images when not split)
    ratio = _imbalance(basis)
    if ratio and ratio > MAX_IMBALANCE:
        lo = min((c for c in basis if basis[c]), key=basis.get)
        hi = max(basis, key=basis.get)
        hint = "; try data.balance=sampler or loss" if images.task == "cls" else ""
        where = "training " if "train" in counts else ""
        findings.append(_finding("imbalance", f"class imbalance {ratio}:1 in the {where}{unit} ({hi!r}: {basis[hi]}, "
                                 f"{lo!r}: {basis[lo]}; limit {MAX_IMBALANCE:g}:1){hint}"))
    per_split = {s: {"images": sum(r.split == s for r in images.records), f"{unit}_per_class": per}
                 for s, per in counts.items()}
    return {"per_split": per_split, f"{unit}_per_class": dict(totals), "imbalance_ratio": ratio,
            "imbalance_ratio_per_split": {k: _imbalance(v) for k, v in counts.items()}}


def _duplicate_checks(images: ImageSet, max_distance: int, findings: list) -> dict:
    recs = images.records
    pairs = duplicate_pairs(images, max_distance)
    listed = [f"{recs[i].name} ~ {recs[j].name} ({kind})" for i, j, kind in pairs]
    cross = [x for (i, j, _), x in zip(pairs, listed) if recs[i].split != recs[j].split]
    within = [x for (i, j, _), x in zip(pairs, listed) if recs[i].split == recs[j].split]
    if cross:
        findings.append(_finding("cross_split_duplicates", f"{len(cross)} duplicate pair(s) across splits "
                                 "(leakage: evaluation sees training images)", cross))
    if within:
        findings.append(_finding("duplicates", f"{len(within)} duplicate pair(s) within a split", within))
    return {"exact": sum(k == "exact" for *_, k in pairs), "near": sum(k == "near" for *_, k in pairs),
            "cross_split": len(cross), "near_max_bits": max_distance}


def inspect_images(images: ImageSet, source: Source, max_distance: int = NEAR_DISTANCE) -> dict:
    findings, hist = [], {}
    readable = [r for r in images.records if not r.error]
    corrupt = [f"{r.name} ({r.error})" for r in images.records if r.error]
    if corrupt:
        findings.append(_finding("corrupt", f"{len(corrupt)} unreadable image(s)", corrupt))
    if images.outside:  # the dataset-path rule (r1/data/formats.py): skipped by every reader
        findings.append(_finding("paths_outside_root", f"{len(images.outside)} file path(s) lead outside the dataset "
                                 "root (.., an absolute path or a symlink): skipped, never read", images.outside))
    classes = _class_checks(images, findings)
    duplicates = _duplicate_checks(images, max_distance, findings)
    w, h = [r.width for r in readable], [r.height for r in readable]
    hist["width px"], hist["height px"] = w, h
    hist["aspect ratio w/h"] = [round(a / max(b, 1), 3) for a, b in zip(w, h)]
    stats = {"task": images.task, "images": len(images.records), "readable": len(readable),
             "classes": images.classes, **classes,
             "image_size": {"width": _summary(w), "height": _summary(h), "aspect": _summary(hist["aspect ratio w/h"]),
                            "distinct_sizes": len(set(zip(w, h))),
                            "channels": {str(k): v for k, v in sorted(Counter(r.channels for r in readable).items())}},
             "duplicates": duplicates, "corrupt": len(corrupt), "outside_root": len(images.outside)}
    if images.task == "det":
        stats["boxes"] = _box_stats(images, findings, hist)
    return {"source": source.describe(), "kind": source.kind, "stats": stats, "findings": findings,
            "histograms": hist}


# ----------------------------------------------------------------------------- text
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")
_WORD = re.compile(r"\w+", re.UNICODE)


def read_text(source: Source) -> str:
    """Every text file of the source, concatenated (JSONL: the `text_key` field of each line)."""
    import json
    root = source.root
    files = sorted(p for p in root.rglob("*") if p.suffix in TEXT_EXTS) if root.is_dir() else [root]
    parts = []
    for f in files:
        raw = f.read_bytes().decode("utf-8", errors="replace")
        if f.suffix == ".jsonl":
            key = source.options.get("text_key", "text")
            raw = "\n\n".join(str(json.loads(ln).get(key, "")) for ln in raw.splitlines() if ln.strip())
        parts.append(raw)
    return "\n\n".join(parts)


def documents(text: str, unit: str = "auto") -> tuple[list[str], str]:
    """(documents, unit used): paragraphs (blank-line separated), or lines (`unit=line`, or `auto`
    when the text has a single paragraph)."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if unit == "line" or (unit == "auto" and len(paras) < 2):
        return [ln.strip() for ln in text.splitlines() if ln.strip()], "line"
    return paras, "paragraph"


def _entropy(counts: Counter) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def inspect_text(source: Source, unit: str = "auto", near_threshold: float = 0.9, max_docs: int = 20000) -> dict:
    from r1.data_tools.text_clean import near_duplicates, normalize

    text = read_text(source)
    findings, hist = [], {}
    bad = len(_CONTROL.findall(text))
    share = bad / max(1, len(text))
    if share > MAX_NONPRINTABLE:
        findings.append(_finding("not_text", f"{share:.1%} of the characters are undecodable bytes or control "
                                 f"characters (limit {MAX_NONPRINTABLE:.0%}): this is not text a model should train on"))
    words = [w.lower() for w in _WORD.findall(text)]
    wc, cc = Counter(words), Counter(text)
    docs, used = documents(text, unit)
    seen, exact = set(), []
    for d in docs:
        h = hashlib.sha1(normalize(d).encode()).digest()
        (exact.append(d) if h in seen else seen.add(h))
    unique = list(dict.fromkeys(docs))[:max_docs]  # near-dup search is bounded: say so when sampling
    near = near_duplicates(unique, near_threshold) if len(unique) > 1 else []
    if exact:
        findings.append(_finding("duplicate_docs", f"{len(exact)} exact duplicate document(s) of {len(docs)}",
                                 [d[:80] for d in exact]))
    if near:
        findings.append(_finding("near_duplicate_docs", f"{len(near)} near-duplicate document(s) (shingle Jaccard >= "
                                 f"{near_threshold})", [unique[i][:80] for i in near]))
    if not words:
        findings.append(_finding("no_words", "no words found"))
    hist["document length chars"] = [len(d) for d in docs]
    hist["word frequency (log10)"] = [round(math.log10(c), 3) for c in wc.values()]
    tail = [w for w, c in sorted(wc.items(), key=lambda kv: (kv[1], kv[0]))[:20]]
    stats = {"task": "text", "chars": len(text), "bytes_nonprintable_share": round(share, 5), "lines": text.count("\n") + 1,
             "documents": len(docs), "document_unit": used,
             "words": len(words), "vocab_words": len(wc), "vocab_chars": len(cc),
             "hapax_words": sum(c == 1 for c in wc.values()),
             "entropy_bits_per_char": round(_entropy(cc), 3), "entropy_bits_per_word": round(_entropy(wc), 3),
             "word_head": wc.most_common(20), "word_tail": tail,
             "doc_chars": _summary(hist["document length chars"]),
             "duplicates": {"exact": len(exact), "near": len(near), "near_checked_docs": len(unique)}}
    return {"source": source.describe(), "kind": "text", "stats": stats, "findings": findings, "histograms": hist}


def inspect(source: Source, max_distance: int = NEAR_DISTANCE, unit: str = "auto") -> dict:
    if source.kind == "text":
        return inspect_text(source, unit)
    return inspect_images(read_images(source), source, max_distance)
