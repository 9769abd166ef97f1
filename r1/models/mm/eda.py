"""EDA text augmentation (Wei & Zou 2019: synonym replacement, random insertion, random swap, random
deletion) that never touches the words an answer depends on.

The synonym table ships here (no corpus download): the function words and phrasing of R1's question
templates. `PROTECTED` words (colours, shapes, relations, counts, positions, class names, question
words) are never replaced, deleted, swapped or inserted, so every protected word of a question
appears in its augmented versions the same number of times and in the same order.
"""
from __future__ import annotations

import numpy as np

SYNONYMS = {
    "object": ["item", "thing"], "objects": ["items", "things"], "image": ["picture", "scene"],
    "picture": ["image"], "the": ["this"], "of": ["for"], "what": ["which"], "have": ["share", "show"],
    "share": ["have"], "in": ["within"], "at": ["in"], "from": ["to"], "to": ["from"], "half": ["side", "part"],
    "cells": ["cell", "objects"], "are": ["appear"], "there": ["here"],
}
PROTECTED = frozenset(
    "red green blue orange gray yellow square circle shape same closest nearest furthest farthest left right top "
    "upper bottom lower how many count number yes no 0 1 2 3 4 5 6 7 8 9 rbc wbc platelets platelet largest "
    "smallest biggest more fewer than not".split())
OPS = ("sr", "ri", "rs", "rd")


def _split(text: str) -> tuple[list[str], str]:
    end = text[-1] if text and text[-1] in "?.!" else ""
    return (text[:-1] if end else text).split(), end


def eda(text: str, rng: np.random.Generator, alpha: float = 0.15, op: str | None = None) -> str:
    """One augmented version of `text`: `op` (sr, ri, rs, rd; None: one drawn at random) applied to
    about `alpha` of its free (unprotected) words; protected words stay as they are, in order."""
    words, end = _split(text)
    free = [i for i, w in enumerate(words) if w.lower() not in PROTECTED]
    if not free:
        return text
    op = op or OPS[int(rng.integers(len(OPS)))]
    n = max(1, int(round(alpha * len(free))))
    if op == "sr":  # replace free words that have synonyms
        for i in rng.permutation([i for i in free if words[i].lower() in SYNONYMS])[:n]:
            words[i] = str(rng.choice(SYNONYMS[words[i].lower()]))
    elif op == "ri":  # insert a synonym of a free word next to a free word
        having = [i for i in free if words[i].lower() in SYNONYMS]
        for _ in range(n if having else 0):
            src = words[int(rng.choice(having))].lower()
            words.insert(int(rng.choice(free)) + 1, str(rng.choice(SYNONYMS[src])))
            free = [i for i, w in enumerate(words) if w.lower() not in PROTECTED]
            having = [i for i in free if words[i].lower() in SYNONYMS]
    elif op == "rs":  # swap two free words
        for _ in range(n if len(free) > 1 else 0):
            a, b = rng.choice(free, 2, replace=False)
            words[a], words[b] = words[b], words[a]
    elif op == "rd":  # drop free words, never all of them
        drop = set(rng.permutation(free)[:min(n, len(free) - 1)].tolist()) if len(free) > 1 else set()
        words = [w for i, w in enumerate(words) if i not in drop]
    else:
        raise ValueError(f"eda op {op!r}; allowed: {', '.join(OPS)}")
    return " ".join(words) + end


def protected_words(text: str) -> list[str]:
    return [w.lower() for w in _split(text)[0] if w.lower() in PROTECTED]


def variants(texts: list[str], k: int, seed: int, alpha: float = 0.15) -> list[list[str]]:
    """`k` augmented versions of each text (deterministic in `seed`)."""
    rng = np.random.default_rng(seed)
    return [[eda(t, rng, alpha) for _ in range(k)] for t in texts]
