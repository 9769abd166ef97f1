"""EDA text augmentation: never changes a protected word; wired into Sort-of-CLEVR's training split only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1.config import DataConfig, from_dict
from r1.data import build_data
from r1.models.mm.data import all_questions
from r1.models.mm.eda import OPS, PROTECTED, SYNONYMS, eda, protected_words, variants

WORDS = sorted(PROTECTED) + sorted(SYNONYMS) + ["apple", "near", "be"]


def test_no_synonym_is_a_protected_word():
    assert not {w for ws in SYNONYMS.values() for w in ws} & PROTECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14), st.sampled_from(OPS + (None,)),
       st.integers(0, 2 ** 32 - 1), st.floats(0.05, 0.9))
def test_protected_words_survive_every_operation_in_order(words, op, seed, alpha):
    text = " ".join(words) + "?"
    out = eda(text, np.random.default_rng(seed), alpha, op)
    assert protected_words(out) == protected_words(text)
    assert out.endswith("?") and out.split()  # never empty


def test_every_template_question_keeps_its_answer_words():
    qs = all_questions()
    for q, vs in zip(qs, variants(qs, 8, seed=0)):
        assert all(protected_words(v) == protected_words(q) for v in vs)
    assert sum(v != q for q, vs in zip(qs, variants(qs, 8, seed=0)) for v in vs) > 0.8 * 8 * len(qs)
    assert variants(qs, 3, seed=1) == variants(qs, 3, seed=1) != variants(qs, 3, seed=2)


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="allowed: sr, ri, rs, rd"):
        eda("what is the object?", np.random.default_rng(0), op="xx")


def test_sort_of_clevr_asks_eda_questions_in_training_only():
    cfg = {"name": "sort_of_clevr", "train_images": 20, "val_images": 5, "test_images": 5}
    plain = build_data(from_dict(DataConfig, cfg, "data"), 0)
    aug = build_data(from_dict(DataConfig, {**cfg, "eda": 1.0, "eda_variants": 4}, "data"), 0)
    n = len(all_questions())
    assert aug.train.table.shape[0] == n * 5 and plain.train.table.shape[0] == n
    with torch.random.fork_rng():
        torch.manual_seed(0)
        rows = [aug.train[i][0][1] for i in range(30)]
    originals = {tuple(r.tolist()) for r in aug.train.table[:n]}
    assert sum(tuple(r.tolist()) not in originals for r in rows) >= 20  # eda=1.0: (almost) every one a variant
    assert aug.val.eda == 0 and aug.test.eda == 0
    torch.manual_seed(3)
    a = aug.train[7][0][1]
    torch.manual_seed(3)
    assert torch.equal(a, aug.train[7][0][1])  # the trainer seeds each item: the same draw on resume
