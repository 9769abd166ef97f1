"""Tokenizers that travel with the model: character-level, and byte-level BPE trained with
Hugging Face `tokenizers`. Both serialise to a JSON-safe dict (`to_dict`) stored in the data meta
(and so in model.json), or to a `.json` file; `load_tokenizer` reads either back.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

from r1.errors import ConfigError, DataError


class CharTokenizer:
    """One id per character (sorted), then the special tokens. Unknown characters are dropped
    (counted in `self.dropped`), so a vocabulary built from the training text stays exact."""

    kind = "char"

    def __init__(self, chars: Iterable[str], specials: Iterable[str] = ()):
        self.chars = sorted(set(chars))
        self.specials = [s for s in specials if s not in self.chars]
        self.itos = self.chars + self.specials
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.special_ids = {s: len(self.chars) + i for i, s in enumerate(self.specials)}
        self.dropped = 0

    @classmethod
    def train(cls, texts: Iterable[str], specials: Iterable[str] = ()) -> "CharTokenizer":
        chars: set[str] = set()
        for t in texts:
            chars.update(t)
        return cls(chars, specials)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def token_to_id(self, token: str) -> int | None:
        return self.special_ids.get(token, self.stoi.get(token))

    def encode(self, text: str) -> list[int]:
        ids = [self.stoi.get(c, -1) for c in text]
        out = [i for i in ids if i >= 0]
        self.dropped += len(ids) - len(out)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        n = len(self.chars)
        return "".join(self.itos[i] for i in ids if 0 <= i < n)  # specials are not text

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars), "specials": self.specials}


class BPETokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenization): any text round-trips exactly."""

    kind = "bpe"

    def __init__(self, tk):
        self.tk = tk

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, specials: Iterable[str] = (),
              min_frequency: int = 2) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(specials), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tk.train_from_iterator(texts, trainer)
        return cls(tk)

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size()

    def token_to_id(self, token: str) -> int | None:
        return self.tk.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tk.decode(list(ids))  # special tokens are skipped

    def to_dict(self) -> dict:
        return {"type": "bpe", "json": self.tk.to_str()}


Tokenizer = CharTokenizer | BPETokenizer

# The words of a text for the text families' one contract (r1/input_kinds/base.py `text_contract`):
# runs of letters and digits; a text without any has its symbols as its words.
_WORDS, _SYMBOLS = re.compile(r"[^\W_]+"), re.compile(r"[^\w\s]|_")


def text_words(text: str) -> list[str]:
    return _WORDS.findall(text) or _SYMBOLS.findall(text)


def word_vocabulary(texts, lowercase: bool = False) -> list[str]:
    """The words and symbols of `texts` (a model's training texts), sorted: what it knows."""
    words: set[str] = set()
    for t in texts:
        t = t.lower() if lowercase else t
        words.update(_WORDS.findall(t))
        words.update(_SYMBOLS.findall(t))
    return sorted(words)


def unknown_words(text: str, tokenizer, vocabulary=None, lowercase: bool = False) -> tuple[list[str], list[str]]:
    """-> (the text's words, those the model does not know, each once): not in `vocabulary` (the training
    texts' words, where the model keeps them), else not fully encoded by the tokenizer (a character
    tokenizer drops characters it does not hold; byte-level BPE encodes everything)."""
    words = text_words(text.lower() if lowercase else text)
    if vocabulary is not None:
        known = set(vocabulary)
        unknown = [w for w in words if w not in known]
    else:
        chars = getattr(tokenizer, "stoi", None)
        unknown = [] if chars is None else [w for w in words if any(c not in chars for c in w)]
    return words, list(dict.fromkeys(unknown))


def tokenizer_from_dict(d: dict) -> Tokenizer:
    if d.get("type") == "char":
        return CharTokenizer(d["chars"], d.get("specials", []))
    if d.get("type") == "bpe":
        from tokenizers import Tokenizer as HFTokenizer
        return BPETokenizer(HFTokenizer.from_str(d["json"]))
    raise DataError(f"unknown tokenizer type {d.get('type')!r}; expected char or bpe")


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    Path(path).write_text(json.dumps(tok.to_dict()))


def _find_tokenizer(obj) -> dict | None:
    """The first dict with a tokenizer `type` found in a model.json / meta structure."""
    if isinstance(obj, dict):
        if obj.get("type") in ("char", "bpe") and ("chars" in obj or "json" in obj):
            return obj
        if isinstance(obj.get("tokenizer"), dict):
            return _find_tokenizer(obj["tokenizer"])
        for v in obj.values():
            found = _find_tokenizer(v)
            if found:
                return found
    return None


def load_tokenizer(source: str | Path | dict) -> Tokenizer:
    """From a meta dict, a tokenizer .json file, a model.json, or a run directory (its model.json)."""
    if isinstance(source, dict):
        found = _find_tokenizer(source)
        if not found:
            raise DataError("no tokenizer in the given meta")
        return tokenizer_from_dict(found)
    path = Path(source)
    if path.is_dir():
        path = path / "model.json"
    if not path.is_file():
        raise ConfigError(f"data.tokenizer_from: {source} is not a tokenizer .json, model.json or run directory")
    try:
        found = _find_tokenizer(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err})") from None
    if not found:
        raise DataError(f"{path}: holds no tokenizer (expected a 'tokenizer' entry of type char or bpe)")
    return tokenizer_from_dict(found)
