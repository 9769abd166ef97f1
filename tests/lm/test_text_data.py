"""Tokenizers, cleaning, text/instruct data kinds, replay."""
import json

import numpy as np
import pytest
import torch

from r1.config import DataConfig, from_dict
from r1.data import build_data
from r1.data_tools.text_clean import clean_docs, near_duplicates
from r1.models.lm.data_instruct import encode_pair
from r1.models.lm.replay import ReplayMixDataset, ReservoirBuffer
from r1.models.lm.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer, save_tokenizer

TEXT = "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer. Ünïcödé ✓\n"


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizer_round_trip(kind, tmp_path):
    tok = CharTokenizer.train([TEXT]) if kind == "char" else BPETokenizer.train([TEXT * 20], 300, ["<|endoftext|>"])
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    if kind == "bpe":
        assert len(ids) < len(TEXT.encode())  # merges learned
        assert tok.decode(tok.encode("never seen: 漢字")) == "never seen: 漢字"  # byte-level: any text
    save_tokenizer(tok, tmp_path / "tok.json")
    back = load_tokenizer(tmp_path / "tok.json")
    assert back.encode(TEXT) == ids and back.vocab_size == tok.vocab_size
    assert load_tokenizer({"tokenizer": tok.to_dict()}).encode(TEXT) == ids  # from a data meta


def test_near_duplicates_known_cases():
    base = " ".join(f"word{i} appears here" for i in range(300))
    near = base.replace("word150 appears", "word150 appeared")  # one edit in ~6000 chars
    different = " ".join(f"term{i} shows there" for i in range(300))
    half = base[: len(base) // 2] + different[len(different) // 2:]
    docs = [base, different, near, half, base.upper()]
    assert near_duplicates(docs, threshold=0.95) == [2, 4]  # upper-case copy normalizes to base
    kept, rep = clean_docs(docs + ["tiny"], dedup="near", min_chars=10)
    assert kept == [base, different, half]
    assert (rep.too_short, rep.exact_dups, rep.near_dups) == (1, 1, 1)
    kept, rep = clean_docs(docs, dedup="exact")
    assert rep.exact_dups == 1 and len(kept) == 4


def test_response_only_loss_mask():
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyzAQ #:\n", ["<|endoftext|>"])
    tpl = "### Q:\n{instruction}\n### A:\n"
    x, y = encode_pair(tok, tpl, "why", "because", 40)
    prompt = tok.encode("### Q:\nwhy\n### A:\n")
    n_p = len(prompt)
    assert (y[: n_p - 1] == -100).all()
    learned = y[y != -100].tolist()
    assert tok.decode(learned) == "because" and learned[-1] == tok.token_to_id("<|endoftext|>")
    assert x[: n_p].tolist() == prompt
    assert torch.equal(y[n_p - 1:n_p + 6], x[n_p:n_p + 7])  # y is x shifted by one where learned
    assert (y[n_p + 7:] == -100).all()  # padding ignored
    assert encode_pair(tok, tpl, "why" * 20, "because", 20) is None  # prompt fills the block


def _data(**kw):
    return build_data(from_dict(DataConfig, kw, "data"), 0)


def test_text_kind_file_split_and_windows(tmp_path):
    text = "".join(chr(97 + (i * 7) % 26) for i in range(5000))
    (tmp_path / "a.txt").write_text(text)
    b = _data(name="text", path=str(tmp_path / "a.txt"), block_size=16, cache_dir=str(tmp_path / "c"), dedup="none")
    assert b.meta["vocab_size"] == b.meta["num_classes"] == 26 and b.meta["train_tokens"] == 4500
    x, y = b.train[10]
    assert x.dtype == torch.int64 and x.shape == (16,) and torch.equal(x[1:], y[:-1])
    tok = load_tokenizer(b.meta)
    assert tok.decode(x.tolist()) == text[10:26]
    assert tok.decode(b.val[0][0].tolist()) == text[4500:4516]  # validation = the last 10%
    assert len(b.val) == (500 - 17) // 16 + 1
    assert list((tmp_path / "c").rglob("train.bin"))  # token ids live in a memory-mapped file
    assert isinstance(b.train.tokens(), np.memmap)


def test_text_kind_directory_and_jsonl_with_dedup(tmp_path):
    docs = [f"document number {i} " * 20 for i in range(30)]
    (tmp_path / "d").mkdir()
    for i, d in enumerate(docs[:10]):
        (tmp_path / "d" / f"{i}.txt").write_text(d)
    (tmp_path / "d" / "dup.txt").write_text(docs[0])
    rows = [{"text": d} for d in docs[10:]] + [{"text": docs[10] + "."}]
    (tmp_path / "d" / "more.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    b = _data(name="text", path=str(tmp_path / "d"), block_size=8, split="docs", val_fraction=0.2,
              cache_dir=str(tmp_path / "c"), specials=["<|endoftext|>"])
    assert b.meta["cleaning"]["exact_dups"] == 1 and b.meta["cleaning"]["near_dups"] == 1
    assert b.meta["cleaning"]["docs_out"] == 30 and b.meta["eos_id"] is not None


def test_instruct_kind_embedded_and_replay(tmp_path):
    b = _data(name="instruct", block_size=96, cache_dir=str(tmp_path), replay="pydoc_topics", replay_ratio=0.5,
              replay_size=50, test_from="pydoc_topics")
    assert b.meta["task"] == "instruct" and "{instruction}" in b.meta["template"]
    x, y = b.val[0]
    assert (y == -100).any() and (y != -100).any()
    kinds = [bool((b.train[i][1] == -100).any()) for i in range(200)]
    assert 0.3 < 1 - sum(kinds) / 200 < 0.7  # about half are replayed pretraining windows (all targets)
    assert b.test is not None and len(b.test) > 0


def test_reservoir_is_uniform_and_bounded():
    counts = np.zeros(100)
    for seed in range(300):
        buf = ReservoirBuffer(10, seed).extend(range(100))
        assert len(buf.items) == 10 and buf.seen == 100
        counts[buf.items] += 1
    assert counts.min() > 10 and counts.max() < 60  # expected 30 each
    mix = ReplayMixDataset(list(range(1000)), ["r"], 0.2, seed=1)
    share = sum(mix[i] == "r" for i in range(1000)) / 1000
    assert 0.15 < share < 0.25 and [mix[i] for i in range(50)] == [mix[i] for i in range(50)]


def test_embedded_kinds(tmp_path):
    b = _data(name="pydoc_topics", block_size=64, cache_dir=str(tmp_path))
    assert b.meta["cleaning"]["docs_in"] >= 70 and b.meta["train_tokens"] > 300_000
    s = _data(name="stdlib_docs", block_size=64, cache_dir=str(tmp_path), tokenizer_from="", specials=[])
    assert s.meta["train_tokens"] > 100_000
