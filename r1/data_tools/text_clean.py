"""Corpus cleaning: length filters, exact and near-duplicate removal (MinHash + LSH over
character shingles, confirmed by exact Jaccard), and an optional perplexity filter.

Documents are kept in order; the first of each duplicate group survives. `r1 data clean --lm RUN`
runs the perplexity filter (r1/data_tools/clean.py).
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


def perplexities(docs: list[str], model, tokenizer, block_size: int, batch: int = 64) -> list[float]:
    """Perplexity of each document under a reference LM (`model(ids (B, T))` -> logits (B, T, V)):
    exp of the mean next-token NLL over the whole document, read in windows of block_size + 1 tokens.
    Characters a char tokenizer cannot encode count at twice the uniform surprisal (2 ln V) each, so
    text from outside the reference corpus' alphabet scores high rather than vanishing. A document
    with no token to predict scores nan (keep it: nothing to judge it by)."""
    import torch
    import torch.nn.functional as F

    unknown_nll = 2 * math.log(max(2, getattr(tokenizer, "vocab_size", 2)))
    windows, owner = [], []  # windows of token ids, each tagged with its document
    unknown = np.zeros(len(docs))
    for n, d in enumerate(docs):
        before = getattr(tokenizer, "dropped", 0)
        ids = tokenizer.encode(d)
        unknown[n] = getattr(tokenizer, "dropped", 0) - before
        for s in range(0, max(1, len(ids) - 1), block_size):
            if len(ids[s:s + block_size + 1]) >= 2:
                windows.append(ids[s:s + block_size + 1])
                owner.append(n)
    nll, count = np.zeros(len(docs)), np.zeros(len(docs))
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))  # equal lengths batch together
    with torch.no_grad():
        for start in range(0, len(order), batch):
            group = order[start:start + batch]
            for length in sorted({len(windows[i]) for i in group}):
                same = [i for i in group if len(windows[i]) == length]
                ids = torch.tensor([windows[i] for i in same])  # (B, T + 1)
                logits = model(ids[:, :-1])  # (B, T, V)
                losses = F.cross_entropy(logits.transpose(1, 2).float(), ids[:, 1:], reduction="none").sum(1)
                for i, loss in zip(same, losses.tolist()):
                    nll[owner[i]] += loss
                    count[owner[i]] += length - 1
    nll += unknown * unknown_nll
    count += unknown
    return [math.exp(a / c) if c else float("nan") for a, c in zip(nll, count)]


def perplexity_keep(scores: list[float], max_ppl: float = 0.0, drop_share: float = 0.0) -> list[bool]:
    """Which documents to keep: perplexity <= max_ppl (when > 0) and not among the `drop_share`
    highest-scoring ones (when > 0). Unscored (nan) documents are kept."""
    s = np.asarray(scores, dtype=np.float64)
    keep = np.ones(len(s), dtype=bool)
    if max_ppl > 0:
        keep &= ~(s > max_ppl)
    if drop_share > 0 and len(s):
        cut = np.nanquantile(s, 1 - drop_share) if np.isfinite(s).any() else np.inf
        keep &= ~(s > cut)
    return keep.tolist()


def perplexity_filter(docs: list[str], model, tokenizer, max_ppl: float, block_size: int,
                      drop_share: float = 0.0) -> list[str]:
    """Keep documents whose perplexity under a reference LM is <= max_ppl (see `perplexities`)."""
    keep = perplexity_keep(perplexities(docs, model, tokenizer, block_size), max_ppl, drop_share)
    return [d for d, k in zip(docs, keep) if k]
