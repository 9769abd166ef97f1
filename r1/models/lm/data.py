"""Text datasets for the lm family.

Kinds (the `data.name`):
  * `text`: a text file, a directory of text files, or JSONL (`data.path`) -> causal-LM windows.
  * `pydoc_topics`, `stdlib_docs`: the embedded default corpora (see `text_embedded`).
  * `instruct`: instruction/response JSONL (or the embedded pairs) with a chat template; targets
    are -100 everywhere but on the response (and its end-of-text token).

`objective: mlm` turns the corpus kinds into masked-LM samples (r1.models.lm.masking: y = the original
token at masked positions, -100 elsewhere); `replay_labels` makes the inputs {"idx": x, "domain":
0 or 1 for replayed} for the contrastive term (r1.models.lm.contrastive).

Every kind returns samples (x[T], y[T]) int64 and a meta holding `vocab_size` (= `num_classes`,
what `model.num_classes: 0` takes), `block_size` and the tokenizer itself (`tokenizer`: a
JSON-safe dict, see `r1.models.lm.tokenizer`), so the tokenizer travels with the model.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import zlib
from dataclasses import asdict
from pathlib import Path

from r1.data import DataBundle, register_data
from r1.data_tools.text_clean import clean_docs
from r1.errors import ConfigError, DataError
from r1.models.lm.config import EOT, LMDataConfig, TextDataConfig
from r1.models.lm.data_store import WindowDataset, cache_key, cache_root, write_tokens
from r1.models.lm.masking import MASK, MaskedLMDataset
from r1.models.lm.replay import ReplayMixDataset, ReservoirBuffer
from r1.models.lm.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer, tokenizer_from_dict

log = logging.getLogger(__name__)
EMBEDDED = ("pydoc_topics", "stdlib_docs")


# ----------------------------------------------------------------------------- reading
def _read_jsonl(path: Path, key: str) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{n}: not JSON ({err.msg})") from None
        if not isinstance(rows[-1], dict) or (key and key not in rows[-1]):
            raise DataError(f"{path}:{n}: expected an object with key {key!r}")
    return rows


def _split_doc(text: str, unit: str) -> list[str]:
    if unit == "paragraph":
        return [p for p in text.split("\n\n") if p.strip()]
    if unit == "line":
        return [p for p in text.splitlines() if p.strip()]
    return [text]


def read_docs(spec: str, text_key: str = "text", unit: str = "file") -> list[str]:
    """Documents of a source: an embedded corpus name, a file (.jsonl or text) or a directory."""
    from r1.models.lm import data_embedded as emb
    if spec == "pydoc_topics":
        return emb.pydoc_topic_docs()
    if spec == "stdlib_docs":
        return emb.stdlib_docstrings()
    path = Path(spec)
    if not spec or not path.exists():
        raise DataError(f"data.path: {spec or '(empty)'} does not exist; give a text file, directory or .jsonl")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md", ".jsonl", ".text")) \
        if path.is_dir() else [path]
    docs = []
    for f in files:
        if f.suffix == ".jsonl":
            docs += [str(r[text_key]) for r in _read_jsonl(f, text_key)]
        else:
            text = f.read_text(encoding="utf-8", errors="replace")
            check_text(f, text)
            docs += _split_doc(text, unit)
    if not docs:
        raise DataError(f"data.path: no text found in {spec}")
    return docs


MAX_BINARY_SHARE = 0.05  # of a text file's characters that may be undecodable bytes or control characters
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")


def check_text(path: Path, text: str, sample: int = 1 << 20) -> None:
    """DataError for a file that is not text (random bytes decode to U+FFFD and control characters):
    a language model would train on noise without a word of warning."""
    head = text[:sample]
    if not head:
        return
    bad = len(_CONTROL.findall(head))
    if bad > MAX_BINARY_SHARE * len(head):
        raise DataError(f"{path}: not text: {bad / len(head):.0%} of its first {len(head)} characters are "
                        f"undecodable bytes or control characters (limit {MAX_BINARY_SHARE:.0%}); "
                        "give UTF-8 text files")


def source_identity(spec: str) -> dict:
    if spec in EMBEDDED:
        import sys
        return {"embedded": spec, "python": sys.version.split()[0]}
    path = Path(spec).resolve()
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {"path": str(path), "files": [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]}


# ----------------------------------------------------------------------------- tokenizer
def build_tokenizer(cfg: LMDataConfig, train_docs: list[str], all_docs: list[str]):
    if cfg.tokenizer_from:
        return load_tokenizer(cfg.tokenizer_from)
    if cfg.tokenizer == "char":  # every character of the corpus (like nanoGPT); no unknowns in val
        return CharTokenizer.train(all_docs, cfg.specials)
    return BPETokenizer.train(train_docs, cfg.vocab_size, cfg.specials)  # BPE sees training text only


def _encode_docs(tok, docs: list[str]) -> list[int]:
    eot = tok.token_to_id(EOT)
    ids: list[int] = []
    for d in docs:
        ids += tok.encode(d)
        if eot is not None:
            ids.append(eot)
    return ids


# ----------------------------------------------------------------------------- corpus pipeline
_TOKEN_FIELDS = ("tokenizer", "vocab_size", "specials", "tokenizer_from", "val_fraction", "split", "dedup",
                 "dedup_threshold", "shingle", "min_chars", "max_chars")


def prepare_corpus(cfg: LMDataConfig, spec: str, read_kw: dict | None = None, tok=None) -> dict:
    """Clean, split, tokenize and store a corpus once; returns its info (paths, tokenizer, counts).
    `tok` forces a tokenizer (replay and test corpora use the current stage's)."""
    read_kw = read_kw or {}
    settings = {k: getattr(cfg, k) for k in _TOKEN_FIELDS}
    if cfg.tokenizer_from:
        settings["tokenizer_from"] = source_identity(cfg.tokenizer_from)
    key = cache_key({"source": source_identity(spec), "settings": settings, "read": read_kw,
                     "tok": tok.to_dict() if tok is not None else None, "v": 1})
    folder = cache_root(cfg.cache_dir) / key
    info_path = folder / "info.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    docs, report = clean_docs(read_docs(spec, **read_kw), cfg.dedup, cfg.dedup_threshold, cfg.shingle,
                              cfg.min_chars, cfg.max_chars)
    if not docs:
        raise DataError(f"{spec}: no documents left after cleaning ({asdict(report)})")
    if cfg.split == "docs":
        is_val = [zlib.crc32(d.encode()) % 10000 < cfg.val_fraction * 10000 for d in docs]
        train_docs = [d for d, v in zip(docs, is_val) if not v]
        val_docs = [d for d, v in zip(docs, is_val) if v]
    else:
        train_docs, val_docs = docs, []
    tok = tok or build_tokenizer(cfg, train_docs, docs)
    if cfg.split == "docs":
        train_ids, val_ids = _encode_docs(tok, train_docs), _encode_docs(tok, val_docs)
    else:
        ids = _encode_docs(tok, docs)
        n_train = int(len(ids) * (1 - cfg.val_fraction))  # nanoGPT's split: first 90% / last 10%
        train_ids, val_ids = ids[:n_train], ids[n_train:]
    if getattr(tok, "dropped", 0):
        log.warning("%s: %d characters outside the tokenizer's vocabulary were dropped", spec, tok.dropped)
    val_chars = len(tok.decode(val_ids)) if val_ids else 0
    folder.mkdir(parents=True, exist_ok=True)
    write_tokens(folder / "train.bin", train_ids, tok.vocab_size)
    write_tokens(folder / "val.bin", val_ids, tok.vocab_size)
    info = {"source": spec, "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size,
            "train_tokens": len(train_ids), "val_tokens": len(val_ids),
            "chars_per_token": val_chars / max(1, len(val_ids)), "cleaning": asdict(report),
            "train": str(folder / "train.bin"), "val": str(folder / "val.bin")}
    info_path.write_text(json.dumps(info))
    return info


def lm_meta(cfg: LMDataConfig, info: dict, task: str = "lm") -> dict:
    tok = info["tokenizer"]
    eot = tokenizer_from_dict(tok).token_to_id(EOT)
    return {"task": task, "vocab_size": info["vocab_size"], "num_classes": info["vocab_size"],
            "block_size": cfg.block_size, "tokenizer": tok, "eos_id": eot, "objective": cfg.objective,
            # bits per character only mean something for next-token prediction
            "chars_per_token": info["chars_per_token"] if cfg.objective == "causal" else 0.0,
            "source": info["source"],
            "train_tokens": info["train_tokens"], "val_tokens": info["val_tokens"],
            "cleaning": {k: v for k, v in info["cleaning"].items() if k != "removed_examples"}}


def with_replay_and_test(cfg: LMDataConfig, train, info: dict, seed: int):
    """Mix the replay corpus into `train` and build the `test` split, both in this stage's tokens."""
    tok = tokenizer_from_dict(info["tokenizer"])
    cfg = dataclasses.replace(cfg, split=cfg.earlier_split) if cfg.split != cfg.earlier_split else cfg
    test = None
    if cfg.test_from:
        t_info = prepare_corpus(cfg, cfg.test_from, tok=tok)
        test = WindowDataset(t_info["val"], tok.vocab_size, cfg.block_size, cfg.block_size)
    if cfg.replay and cfg.replay_ratio > 0:
        r_info = prepare_corpus(cfg, cfg.replay, tok=tok)
        old = WindowDataset(r_info["train"], tok.vocab_size, cfg.block_size, cfg.block_size)
        buf = ReservoirBuffer(cfg.replay_size, seed).extend(old[i] for i in range(len(old)))
        log.info("replay: %d of %d windows of %s, ratio %.2f", len(buf.items), buf.seen, cfg.replay, cfg.replay_ratio)
        train = ReplayMixDataset(train, buf.items, cfg.replay_ratio, seed, labels=cfg.replay_labels)
    elif cfg.replay_labels:
        raise ConfigError("data.replay_labels: needs a replay corpus (data.replay) and data.replay_ratio > 0")
    return train, test


def with_mlm_specials(cfg: LMDataConfig) -> LMDataConfig:
    if cfg.objective == "mlm" and MASK not in cfg.specials:
        return dataclasses.replace(cfg, specials=[*cfg.specials, MASK])
    return cfg


def masked_lm(cfg: LMDataConfig, info: dict, seed: int, train, val, test):
    """objective=mlm: the splits as masked-LM samples (fixed masks for val/test)."""
    mask_id = tokenizer_from_dict(info["tokenizer"]).token_to_id(MASK)
    if mask_id is None:
        raise DataError(f"data.objective=mlm: the tokenizer has no {MASK} token (data.tokenizer_from="
                        f"{cfg.tokenizer_from or '-'}); add it to data.specials where the tokenizer is built")
    wrap = lambda ds, fixed: None if ds is None else MaskedLMDataset(ds, mask_id, info["vocab_size"],
                                                                     cfg.mask_prob, seed, fixed)
    return wrap(train, False), wrap(val, True), wrap(test, True)


def corpus_bundle(cfg: LMDataConfig, spec: str, seed: int, read_kw: dict | None = None) -> DataBundle:
    cfg = with_mlm_specials(cfg)
    info = prepare_corpus(cfg, spec, read_kw)
    if info["val_tokens"] <= cfg.block_size:
        raise DataError(f"{spec}: validation split has {info['val_tokens']} tokens, fewer than block_size+1 "
                        f"({cfg.block_size + 1}); raise data.val_fraction or lower data.block_size")
    train = WindowDataset(info["train"], info["vocab_size"], cfg.block_size, cfg.train_stride)
    val = WindowDataset(info["val"], info["vocab_size"], cfg.block_size, cfg.block_size)
    train, test = with_replay_and_test(cfg, train, info, seed)
    if cfg.objective == "mlm":
        train, val, test = masked_lm(cfg, info, seed, train, val, test)
    return DataBundle(train, val, test, "lm", lm_meta(cfg, info))


@register_data("text", config=TextDataConfig)
def text_data(cfg: TextDataConfig, seed: int) -> DataBundle:
    """Causal-LM windows from a text file, a directory or JSONL."""
    if cfg.path in EMBEDDED:
        raise ConfigError(f"data.path: use data.name={cfg.path} for the embedded corpus")
    return corpus_bundle(cfg, cfg.path, seed, {"text_key": cfg.text_key, "unit": cfg.doc_split})


@register_data("pydoc_topics", config=LMDataConfig)
def pydoc_topics_data(cfg: LMDataConfig, seed: int) -> DataBundle:
    """Embedded pretraining corpus: Python's documentation topics (pydoc_data.topics)."""
    return corpus_bundle(cfg, "pydoc_topics", seed)


@register_data("stdlib_docs", config=LMDataConfig)
def stdlib_docs_data(cfg: LMDataConfig, seed: int) -> DataBundle:
    """Embedded domain-adaptation corpus: standard-library docstrings."""
    return corpus_bundle(cfg, "stdlib_docs", seed)
