"""`instruct`: instruction/response pairs with a chat template; loss on response tokens only.

Each sample is template(instruction) + response + `<|endoftext|>` (when the tokenizer has it),
cut to block_size + 1 tokens; x = ids[:-1], y = ids[1:] with y = -100 on prompt positions and on
padding, so only the response (and its end token) is learned.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import torch
from torch.utils.data import Dataset

from r1.data import DataBundle, register_data
from r1.data_tools.text_clean import clean_docs
from r1.errors import ConfigError, DataError
from r1.models.lm.config import DEFAULT_TEMPLATE, InstructDataConfig  # noqa: F401  (DEFAULT_TEMPLATE re-exported)
from r1.models.lm.data import EOT, _read_jsonl, lm_meta, with_replay_and_test
from r1.models.lm.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer

log = logging.getLogger(__name__)


def format_prompt(template: str, instruction: str) -> str:
    return template.replace("{instruction}", instruction)


def encode_pair(tok, template: str, instruction: str, response: str, block_size: int):
    """-> (x[T], y[T]) int64, y = -100 outside the response; None when no response token fits."""
    prompt = tok.encode(format_prompt(template, instruction))
    resp = tok.encode(response)
    eot = tok.token_to_id(EOT)
    if eot is not None:
        resp = resp + [eot]
    ids = (prompt + resp)[: block_size + 1]
    if len(ids) <= len(prompt):
        return None
    x = torch.zeros(block_size, dtype=torch.long)
    y = torch.full((block_size,), -100, dtype=torch.long)
    x[: len(ids) - 1] = torch.tensor(ids[:-1])
    y[: len(ids) - 1] = torch.tensor(ids[1:])
    y[: len(prompt) - 1] = -100  # targets that are still prompt tokens
    return x, y


class PairDataset(Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def read_pairs(cfg: InstructDataConfig) -> list[tuple[str, str]]:
    if not cfg.path:
        from r1.models.lm.data_embedded import instruction_pairs
        return [(p["instruction"], p["response"]) for p in instruction_pairs()]
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"data.path: {cfg.path} is not a JSONL file")
    rows = _read_jsonl(path, cfg.prompt_key)
    if any(cfg.response_key not in r for r in rows):
        raise DataError(f"{path}: every record needs {cfg.prompt_key!r} and {cfg.response_key!r}")
    return [(str(r[cfg.prompt_key]), str(r[cfg.response_key])) for r in rows]


@register_data("instruct", config=InstructDataConfig)
def instruct_data(cfg: InstructDataConfig, seed: int) -> DataBundle:
    """Instruction tuning: chat-templated pairs, response-only loss."""
    if cfg.objective != "causal":
        raise ConfigError("data.objective: instruction data is causal only (the response follows the prompt)")
    pairs = read_pairs(cfg)
    texts = [f"{a}\n{b}" for a, b in pairs]
    kept, report = clean_docs(texts, cfg.dedup, cfg.dedup_threshold, cfg.shingle, cfg.min_chars, cfg.max_chars)
    keep = set(kept)
    pairs = [p for p, t in zip(pairs, texts) if t in keep and not keep.discard(t)]
    if cfg.tokenizer_from:
        tok = load_tokenizer(cfg.tokenizer_from)
    elif cfg.tokenizer == "char":
        tok = CharTokenizer.train([format_prompt(cfg.template, a) + b for a, b in pairs], cfg.specials)
    else:
        tok = BPETokenizer.train([format_prompt(cfg.template, a) + b for a, b in pairs], cfg.vocab_size, cfg.specials)
    train, val, skipped = [], [], 0
    for a, b in pairs:
        item = encode_pair(tok, cfg.template, a, b, cfg.block_size)
        if item is None:
            skipped += 1
            continue
        is_val = zlib.crc32(a.encode()) % 10000 < cfg.val_fraction * 10000
        (val if is_val else train).append(item)
    if skipped:
        log.warning("instruct: %d pairs skipped (the prompt fills block_size=%d)", skipped, cfg.block_size)
    if not train or not val:
        raise DataError(f"instruct: {len(train)} training and {len(val)} validation pairs; need both")
    info = {"source": cfg.path or "embedded pydoc pairs", "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size,
            "train_tokens": sum(int((y != -100).sum()) for _, y in train),
            "val_tokens": sum(int((y != -100).sum()) for _, y in val), "chars_per_token": 0.0,
            "cleaning": {**report.__dict__, "skipped_long_prompt": skipped}}
    meta = lm_meta(cfg, info, task="instruct")
    meta["template"] = cfg.template
    train_ds, test = with_replay_and_test(cfg, PairDataset(train), info, seed)
    return DataBundle(train_ds, PairDataset(val), test, "lm", meta)
