"""Corpus cleaning: length filters, exact and near-duplicate removal (MinHash + LSH over
character shingles, confirmed by exact Jaccard), and an optional perplexity filter.

Documents are kept in order; the first of each duplicate group survives.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

_PRIME = (1 << 31) - 1


def normalize(text: str) -> str:
    """Lower-case, whitespace collapsed: the form exact dedup compares."""
    return re.sub(r"\s+", " ", text).strip().lower()


def shingles(text: str, k: int = 5) -> np.ndarray:
    """Sorted unique uint32 hashes (crc32) of the character k-grams of the normalized text."""
    t = normalize(text)
    if len(t) < k:
        return np.array([zlib.crc32(t.encode())], dtype=np.uint64)
    hs = {zlib.crc32(t[i:i + k].encode()) for i in range(len(t) - k + 1)}
    return np.fromiter(sorted(hs), dtype=np.uint64, count=len(hs))


class MinHasher:
    """`num_perm` universal hashes h(x) = (a x + b) mod (2^31 - 1); signature = min per hash."""

    def __init__(self, num_perm: int = 128, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _PRIME, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, num_perm, dtype=np.uint64)

    def signature(self, sh: np.ndarray) -> np.ndarray:
        sig = np.full(len(self.a), _PRIME, dtype=np.uint64)
        for chunk in np.array_split(sh, max(1, len(sh) // 4096)):  # bounded memory: (4096, num_perm)
            if len(chunk):
                sig = np.minimum(sig, ((chunk[:, None] * self.a + self.b) % _PRIME).min(0))
        return sig


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / max(1, len(a) + len(b) - inter)


def near_duplicates(docs: list[str], threshold: float = 0.95, k: int = 5, num_perm: int = 128,
                    bands: int = 32, seed: int = 0) -> list[int]:
    """Indices of documents whose shingle Jaccard similarity with an earlier kept document is
    >= threshold. LSH (`bands` x rows of the MinHash signature) proposes candidates; the exact
    Jaccard of the shingle sets decides, so the result does not depend on hash luck."""
    rows = num_perm // bands
    hasher = MinHasher(num_perm, seed)
    buckets: dict[tuple[int, bytes], list[int]] = {}
    kept_sh: dict[int, np.ndarray] = {}
    dups = []
    for i, doc in enumerate(docs):
        sh = shingles(doc, k)
        sig = hasher.signature(sh)
        keys = [(b, sig[b * rows:(b + 1) * rows].tobytes()) for b in range(bands)]
        cands = {j for key in keys for j in buckets.get(key, ())}
        if any(jaccard(sh, kept_sh[j]) >= threshold for j in sorted(cands)):
            dups.append(i)
            continue
        kept_sh[i] = sh
        for key in keys:
            buckets.setdefault(key, []).append(i)
    return dups


@dataclass
class CleanReport:
    docs_in: int = 0
    too_short: int = 0
    too_long: int = 0
    exact_dups: int = 0
    near_dups: int = 0
    docs_out: int = 0
    removed_examples: list[str] = field(default_factory=list)


def clean_docs(docs: list[str], dedup: str = "near", threshold: float = 0.95, shingle: int = 5,
               min_chars: int = 0, max_chars: int = 0) -> tuple[list[str], CleanReport]:
    """Length filters, then exact dedup (`dedup` in exact|near), then near dedup (`near`)."""
    rep = CleanReport(docs_in=len(docs))
    out = []
    for d in docs:
        if len(d) < min_chars:
            rep.too_short += 1
        elif max_chars and len(d) > max_chars:
            rep.too_long += 1
        else:
            out.append(d)
    if dedup in ("exact", "near"):
        seen, kept = set(), []
        for d in out:
            h = hashlib.sha1(normalize(d).encode()).digest()
            if h in seen:
                rep.exact_dups += 1
                continue
            seen.add(h)
            kept.append(d)
        out = kept
    if dedup == "near" and len(out) > 1:
        drop = set(near_duplicates(out, threshold, shingle))
        rep.near_dups = len(drop)
        rep.removed_examples = [out[i][:80] for i in sorted(drop)[:3]]
        out = [d for i, d in enumerate(out) if i not in drop]
    rep.docs_out = len(out)
    log.info("cleaning: %d docs in, %d too short, %d too long, %d exact and %d near duplicates, %d out",
             rep.docs_in, rep.too_short, rep.too_long, rep.exact_dups, rep.near_dups, rep.docs_out)
    return out, rep


def perplexity_filter(docs: list[str], model, tokenizer, max_ppl: float, block_size: int) -> list[str]:
    """Keep documents whose perplexity under a reference LM (`model(idx)` -> logits) is <= max_ppl."""
    import torch
    import torch.nn.functional as F
    kept = []
    with torch.no_grad():
        for d in docs:
            ids = tokenizer.encode(d)[: block_size + 1]
            if len(ids) < 2:
                continue
            x = torch.tensor([ids[:-1]])
            y = torch.tensor(ids[1:])
            loss = F.cross_entropy(model(x)[0], y).item()
            if math.exp(loss) <= max_ppl:
                kept.append(d)
    return kept
