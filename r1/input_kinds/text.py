"""The `text` input kind: a prompt and sampling settings in, generated text out (language models).

HTTP body: JSON `TextRequest` (`{"text": "...", "max_new_tokens": 64, "temperature": 0.8, ...}`);
the OpenAI-style /v1/completions route (r1/serve/completions.py) makes the same tasks. A task
is generated alone (streamed ones piece by piece through `emit`) and stops at its next token when
its id is in `cancelled` (its caller timed out or went away; `r1.cancel`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Container, Optional

from pydantic import BaseModel, ConfigDict, Field

from r1 import cancel
from r1.errors import ConfigError, DataError, NonFiniteOutput
from r1.input_kinds.base import InputKind, checked, error, text_contract
from r1.input_kinds.http import ApiError, is_json, json_object, media_type, validate
from r1.input_kinds.tensors import tensor_meta, text_rows

log = logging.getLogger(__name__)

# Hard limits of the text schema; a server may set lower ones (`r1 serve --max-new-tokens`).
MAX_TEXT_CHARS, MAX_NEW_TOKENS = 100_000, 4096


def check_text_length(text, limit: int, field: str = "text") -> None:
    """413 `text_too_long` for text over the server's limit: one status for every family and route
    (/v1/predict of text and image+text models, /v1/completions)."""
    if isinstance(text, str) and len(text) > limit:
        raise ApiError(413, "text_too_long", f"{field}: {len(text)} characters; this server takes at most {limit}")


class TextRequest(BaseModel):
    """Language models: a prompt and sampling settings. Image models answer 422."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS,
                      description="Prompt text (the server's --max-text-chars may be lower).")
    max_new_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS,
                                description="Tokens to generate (the server's --max-new-tokens may be lower).")
    temperature: float = Field(0.8, ge=0.0, le=10.0, description="Sampling temperature; 0 is greedy.")
    top_k: int = Field(0, ge=0, le=1_000_000, description="Sample among the k most likely tokens; 0: all.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling: the smallest set with this mass.")
    seed: Optional[int] = Field(None, ge=0, le=2 ** 63 - 1,
                                description="Sampling seed (same seed, prompt and settings: same text). "
                                            "Omitted: a random one, returned in the response.")
    chat: Optional[bool] = Field(None, description="Wrap the prompt in the model's chat template "
                                                   "(default: when the model has one).")


@dataclass(frozen=True)
class TextTask:
    text: str
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    chat: Optional[bool] = None
    id: int = 0
    stream: bool = False  # send {"prompt_tokens": n}, then {"text": piece}s, through `emit` as they come


class TextKind(InputKind):
    name = "text"
    generates_text = True
    needs = ("predictor",)

    def openapi_content(self) -> dict:
        return {"application/json": {"schema": TextRequest.model_json_schema()}}

    async def read_request(self, request, ctx) -> TextTask:
        """The prompt and sampling settings of a JSON `TextRequest` body, with a task id (a
        generation can then be stopped when its caller gives up)."""
        media = media_type(request)
        if not is_json(media):
            raise ApiError(415, "unsupported_media_type",
                           f"content type {media or '(none)'!r} not supported; this is a language model: send "
                           f"application/json {{\"text\": \"...\", \"max_new_tokens\": N}}")
        body = await json_object(request, '{"text": "..."}')
        if "image" in body and "text" not in body:
            raise ApiError(422, "image_not_supported", "this model is a language model; send {\"text\": ...}")
        return self.task(body, ctx)

    def task(self, body: dict, ctx) -> TextTask:
        """A `TextRequest`-shaped dict -> a task (422 naming a field out of its range or this server's)."""
        cfg = ctx.cfg
        check_text_length(body.get("text"), cfg.max_text_chars)
        req = validate(TextRequest, body)
        if req.max_new_tokens > cfg.max_new_tokens:
            raise ApiError(422, "invalid_request", f"max_new_tokens: at most {cfg.max_new_tokens} on this server, "
                                                   f"got {req.max_new_tokens}")
        return TextTask(req.text, req.max_new_tokens, req.temperature, req.top_k, req.top_p, req.seed, req.chat,
                        next(ctx.next_id))

    # Open Inference Protocol: one prompt per row (`text_input`, as Triton's LLM backends), sampling
    # settings as request parameters; the generated text is `text_output`
    v2_renames = {"text": "text_output"}
    v2_parameters = {"max_tokens": "tokens to generate (64)", "temperature": "0 is greedy (0.8)",
                     "top_k": "sample among the k most likely tokens; 0: all", "top_p": "nucleus mass (1.0)",
                     "seed": "sampling seed"}

    def v2_inputs(self) -> list[dict]:
        return [tensor_meta("text_input", "BYTES", [-1])]

    async def read_v2(self, tensors: dict, params: dict, ctx) -> list:
        settings = {("max_new_tokens" if k == "max_tokens" else k): v for k, v in params.items()}
        return [self.task({"text": text, **settings}, ctx)
                for text in text_rows(tensors, "text_input", MAX_TEXT_CHARS)]

    def sample_request(self) -> tuple[bytes, str]:
        body = {"text": "The quick brown fox", "max_new_tokens": 8, "temperature": 0.0}
        return json.dumps(body).encode(), "application/json"

    def run_batch(self, predictor, tasks: list, cfg, cancelled: Container[int] = (),
                  emit: Callable[[int, dict], None] | None = None) -> list[tuple]:
        """Prompts are generated one after another (streamed ones piece by piece to `emit`)."""
        return [_generate(predictor, t, cancelled, emit) for t in tasks]

    def read_files(self, model: str, paths: list[Path], options: dict) -> list:
        raise ConfigError(f"{model}: this model takes text inputs, not image files alone; use `r1 generate`")


def _stream(predictor, task: TextTask, emit: Callable[[int, dict], None], unknown: list[str]) -> dict:
    """Generate with `predictor.stream`, sending the prompt's token count (and unknown words), then each piece."""
    encode = getattr(predictor, "encode", None)
    if encode is not None:
        emit(task.id, {"prompt_tokens": len(encode(task.text, task.chat)), "unknown_words": unknown})
    for record in predictor.stream(task.text, task.max_new_tokens, task.temperature, task.top_k, task.top_p,
                                   task.seed, task.chat):
        if record.get("done"):
            return {k: v for k, v in record.items() if k != "done"}
        emit(task.id, {"text": record["text"]})
        cancel.check()
    raise RuntimeError("the stream ended without its final record")


def _generate(predictor, task, cancelled: Container[int], emit=None) -> tuple:
    if not isinstance(task, TextTask):
        return error(422, "image_not_supported", "this model takes text; send {\"text\": ...}")
    unknown = text_contract(predictor, task.text)
    if isinstance(unknown, tuple):
        return unknown
    try:
        with cancel.scope(lambda: task.id in cancelled):
            cancel.check()
            if task.stream and emit is not None:
                record = _stream(predictor, task, emit, unknown)
            else:
                record = predictor.generate(task.text, task.max_new_tokens, task.temperature, task.top_k,
                                            task.top_p, task.seed, task.chat)
    except cancel.Cancelled:
        return error(504, "cancelled", "the request was given up (timeout or disconnect); generation stopped")
    except ConfigError as err:
        return error(422, "invalid_request", str(err))
    except NonFiniteOutput as err:
        return error(500, "non_finite_output", str(err))
    except DataError as err:  # nothing of the text encodes (the contract has named its words already)
        return error(422, "unknown_words", str(err))
    except Exception as err:  # this request's failure, not its batch-mates'
        log.exception("generation failed")
        return error(500, "generation_failed", f"{type(err).__name__}: {err}"[:300])
    return checked({**record, "unknown_words": unknown})
