"""Autoregressive generation for the lm family, with or without a KV cache.

Models provide `forward_cached(idx, cache, exit_threshold)` -> last-position logits (B, V),
`new_cache()` and `block_size`; `model(idx)` -> logits (B, T, V) serves the uncached path.
With the cache, when the context reaches `block_size` the cache is rebuilt from the last 3/4 of
the window (one prefill), so cost per token stays bounded; without it, every step recomputes the
last `block_size` tokens (the reference the cache is tested against).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from r1 import cancel
from r1.errors import ConfigError, NonFiniteOutput

SAMPLING_LIMITS = {"temperature": "a finite number >= 0 (0: greedy)", "top_k": "an integer >= 0 (0: all tokens)",
                   "top_p": "a number in (0, 1] (1: all tokens)"}


def default_exit_threshold(model) -> float | list[float] | None:
    """The model's default early-exit threshold (per exit head once calibrated after training), or
    None for models without exit heads."""
    return getattr(model, "default_exit_threshold", None) if hasattr(model, "exit_set") else None


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_sampling(temperature, top_k, top_p, names: dict[str, str] | None = None) -> None:
    """ConfigError naming the setting (`names` maps it to e.g. a flag) unless temperature, top_k and
    top_p are allowed values (SAMPLING_LIMITS)."""
    ok = {"temperature": _is_number(temperature) and math.isfinite(temperature) and temperature >= 0,
          "top_k": isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 0,
          "top_p": _is_number(top_p) and 0 < top_p <= 1}
    values = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    for key, good in ok.items():
        if not good:
            raise ConfigError(f"{(names or {}).get(key, key)}: {values[key]!r} is not allowed; "
                              f"expected {SAMPLING_LIMITS[key]}")


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> next ids (B, 1). temperature 0 is greedy; top_k 0 and top_p 1 disable them.

    Bad settings raise ConfigError; NaN logits raise NonFiniteOutput. Tiny temperatures and top_p
    are safe: logits are shifted by their max before scaling (no inf - inf) and the most likely
    token always stays a candidate."""
    check_sampling(temperature, top_k, top_p)
    if bool((torch.isnan(logits) | torch.isposinf(logits)).any()):
        raise NonFiniteOutput("the model produced non-finite logits (NaN/inf): its weights are broken")
    if temperature <= 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float()
    logits = (logits - logits.amax(-1, keepdim=True)) / max(float(temperature), torch.finfo(torch.float32).tiny)
    logits = logits.nan_to_num(nan=float("-inf"))  # -inf - -inf where a row is all -inf
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        drop[:, 0] = False  # ... and the best token, whatever top_p (a float32 top_p may round to 0)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


@torch.no_grad()
def generate_stream(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0, use_cache: bool = True, exit_threshold: float | None = None,
                    eos_id: int | None = None, generator: torch.Generator | None = None,
                    stats: dict | None = None) -> Iterator[torch.Tensor]:
    """Yield next-token ids (B, 1) one step at a time for prompt ids `idx` (B, T).

    `stats`, when given, receives `tokens` and `layers` (blocks run for the generated tokens;
    fewer than tokens x n_layer when early exit skips blocks)."""
    model.eval()
    if not hasattr(model, "exit_set"):
        exit_threshold = None
    kw = {} if exit_threshold is None else {"exit_threshold": exit_threshold}
    block = model.block_size
    stats = {} if stats is None else stats
    stats.setdefault("tokens", 0)
    stats.setdefault("layers", 0.0)
    ctx = idx[:, -block:]
    cache = None
    check_sampling(temperature, top_k, top_p)
    for _ in range(max_new_tokens):
        cancel.check()  # a server stops a generation whose caller gave up (r1.cancel)
        if use_cache:
            if cache is None:
                cache = model.new_cache()
                logits = model.forward_cached(ctx, cache, exit_threshold)
            elif cache.pos >= block:  # window full: rebuild from the most recent 3/4
                ctx = ctx[:, -(block * 3 // 4):]
                cache = model.new_cache()
                logits = model.forward_cached(ctx, cache, exit_threshold)
            else:
                logits = model.forward_cached(ctx[:, -1:], cache, exit_threshold)
        else:
            logits = model(ctx[:, -block:], **kw)[:, -1]
        layers = getattr(model, "last_layers_run", None)
        stats["layers"] += float(layers[:, -1].mean()) if layers is not None else model.n_layer
        stats["tokens"] += 1
        nxt = sample_next(logits, temperature, top_k, top_p, generator)
        yield nxt
        if eos_id is not None and bool((nxt == eos_id).all()):
            return
        ctx = torch.cat([ctx, nxt], dim=1)


def generate(model, idx: torch.Tensor, max_new_tokens: int, **kw) -> torch.Tensor:
    """Prompt ids (B, T) -> prompt + generated ids (B, T + n). Keyword args as `generate_stream`."""
    out = [idx] + list(generate_stream(model, idx, max_new_tokens, **kw))
    return torch.cat(out, dim=1)


def stream_text(model, tokenizer, prompt: str, max_new_tokens: int = 200, stats: dict | None = None,
                **kw) -> Iterator[str]:
    """Yield decoded text pieces as tokens arrive (holding back incomplete UTF-8 byte sequences).
    Stops at the tokenizer's `<|endoftext|>` when it has one. `stats["tokens"]`: tokens so far."""
    ids = tokenizer.encode(prompt) or [0]
    kw.setdefault("eos_id", tokenizer.token_to_id("<|endoftext|>"))
    out: list[int] = []
    emitted = ""
    for nxt in generate_stream(model, torch.tensor([ids]), max_new_tokens, **kw):
        out.append(int(nxt[0, 0]))
        if stats is not None:
            stats["tokens"] = len(out)
        text = tokenizer.decode(out)
        if text.endswith("\ufffd"):
            continue
        if len(text) > len(emitted):
            yield text[len(emitted):]
            emitted = text


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 200, **kw) -> str:
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, **kw))


def load_lm(path, device: str = "cpu"):
    """A trained lm run dir / model.safetensors -> (model in eval mode, its tokenizer)."""
    from r1.artifacts import load_model
    from r1.errors import ConfigError
    from r1.models.lm.tokenizer import load_tokenizer
    model = load_model(path, device)
    if getattr(model, "r1_family", "lm") != "lm":
        raise ConfigError(f"{path}: a {model.r1_family} model, not a language model")
    return model, load_tokenizer(model.r1_meta)


def prompt_text(meta: dict, prompt: str, chat: bool | None = None) -> str:
    """Wrap `prompt` in the chat template of an instruction-tuned model (chat=None: when it has one)."""
    template = meta.get("template")
    if chat is None:
        chat = bool(template)
    return template.replace("{instruction}", prompt) if chat and template else prompt
