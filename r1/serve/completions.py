"""`POST /v1/completions`: the OpenAI completions API over a served language model.

    curl -N localhost:8000/v1/completions -H 'content-type: application/json' \
         -d '{"prompt": "To be", "max_tokens": 40, "stream": true, "stop": ["\\n"]}'

Request: model (optional: a variant's name pins it; the run's name or none routes as usual),
prompt (a string or a list of at most `serve.max_prompts` strings), max_tokens (16), temperature
(1.0), top_p (1.0), stop (a string or up to 4, each at most MAX_STOP_CHARS characters), n (1 only),
stream, seed, user (sticky routing like `X-R1-User`). A prompt over `serve.max_text_chars` is 413
`text_too_long`, as on /v1/predict. A prompt list takes one queue place per prompt: a request whose
prompts do not all fit is refused (503) before any is queued, and when one prompt of a list fails
(or the client goes away) the others are cancelled at once, queued or running. Response:
`{"id", "object": "text_completion", "created", "model", "variant", "choices": [{"text", "index",
"logprobs": null, "finish_reason", "unknown_words"}], "usage": {"prompt_tokens", "completion_tokens",
"total_tokens"}}` (`unknown_words`: the prompt's words the model's vocabulary does not hold);
finish_reason is "stop" (a stop string or the model's end of text) or "length".

Streaming (`stream: true`): `text/event-stream`, one `data: {json}` event per text piece (each a
chunk of the response above with one choice), a last chunk with the finish_reason and usage, then
`data: [DONE]`. Prompts of a list stream one after another (each chunk names its `index`).

The generation runs in the variant's worker (`TextPredictor.stream`), which sends each piece back
as it is decoded. Stop strings are applied here: text that could be the start of a stop string is
held back until it is not; at the first stop string the text is cut there and the generation is
cancelled (`r1.cancel`), as it is when the client disconnects mid-stream. A failure before the
first piece reaches the client is handled like /v1/predict's (retried on the stable variant);
after it, the stream ends with a `data: {"error": ...}` event and `[DONE]`.

The route answers 404 on a server whose model does not generate text (its input kind says).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import AsyncIterator, Optional, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.requests import ClientDisconnect

from r1.input_kinds import get_input_kind
from r1.input_kinds.http import ApiError, parse_json, summarize_errors
from r1.input_kinds.text import TextTask
from r1.serve.batcher import Closed, QueueFull
from r1.serve.disconnect import unless_disconnected
from r1.serve.worker import WorkerDied


class CompletionRequest(BaseModel):
    """OpenAI completions request (the fields R1 implements; others at their defaults only)."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, description="A variant's name pins it; the run's name (or none) routes "
                                                   "as usual.")
    prompt: Union[str, list[str]] = Field(..., description="A prompt, or a list of prompts (one choice each).")
    max_tokens: StrictInt = Field(16, ge=1, description="The most tokens to generate per prompt.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    stop: Union[str, list[str], None] = Field(None, description="Up to 4 strings; the text is cut at the first.")
    n: StrictInt = Field(1, description="Choices per prompt: 1 only.")
    stream: StrictBool = Field(False, description="Server-sent events, one per text piece, then [DONE].")
    seed: Optional[StrictInt] = Field(None, ge=0, le=2 ** 63 - 1, description="Sampling seed.")
    user: Optional[str] = Field(None, description="End-user id: sticky variant routing (like X-R1-User).")
    # OpenAI fields accepted at their defaults only
    echo: StrictBool = False
    logprobs: Optional[StrictInt] = None
    best_of: Optional[StrictInt] = None
    suffix: Optional[str] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict] = None
    stream_options: Optional[dict] = None


MAX_STOP_CHARS = 256  # longer stop strings would hold back every streamed piece until the end
UNSUPPORTED = {"echo": False, "logprobs": None, "suffix": None, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def parse_request(body: object, max_text_chars: int, max_new_tokens: int, max_prompts: int = 64) -> CompletionRequest:
    """A JSON body -> CompletionRequest; ApiError 400 naming the field and what is allowed (413 for a
    prompt over `max_text_chars`)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "body: expected a JSON object {\"prompt\": ..., \"max_tokens\": N}")
    try:
        req = CompletionRequest.model_validate(body)
    except ValidationError as err:
        raise ApiError(400, "invalid_request", summarize_errors(err.errors())) from None
    if req.n != 1:
        raise ApiError(400, "invalid_request", f"n: {req.n} is not supported; this server returns one choice per "
                                               f"prompt (n=1); send several prompts as a list instead")
    if req.best_of not in (None, 1):
        raise ApiError(400, "invalid_request", f"best_of: {req.best_of} is not supported; only 1")
    for key, default in UNSUPPORTED.items():
        if getattr(req, key) != default:
            raise ApiError(400, "invalid_request", f"{key}: {getattr(req, key)!r} is not supported; leave it at "
                                                   f"{json.dumps(default)}")
    if req.logit_bias:
        raise ApiError(400, "invalid_request", "logit_bias: not supported; leave it empty")
    prompts = prompts_of(req)
    if not prompts or any(not p for p in prompts):
        raise ApiError(400, "invalid_request", "prompt: expected a non-empty string or a non-empty list of them")
    if len(prompts) > max_prompts:
        raise ApiError(400, "invalid_request", f"prompt: a list of {len(prompts)} prompts; this server takes at most "
                                               f"{max_prompts} per request (serve.max_prompts)")
    longest = max(len(p) for p in prompts)
    if longest > max_text_chars:
        raise ApiError(413, "text_too_long", f"prompt: {longest} characters; this server takes at most "
                                             f"{max_text_chars}")
    if req.max_tokens > max_new_tokens:
        raise ApiError(400, "invalid_request", f"max_tokens: at most {max_new_tokens} on this server, got "
                                               f"{req.max_tokens}")
    stops = stops_of(req)
    if len(stops) > 4 or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(400, "invalid_request", f"stop: at most 4 non-empty strings of at most {MAX_STOP_CHARS} "
                                               "characters each")
    return req


def prompts_of(req: CompletionRequest) -> list[str]:
    return [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)


def stops_of(req: CompletionRequest) -> list[str]:
    return [] if req.stop is None else [req.stop] if isinstance(req.stop, str) else list(req.stop)


class StopCutter:
    """Feed text pieces; get back what may be sent, holding back a tail that could still become
    a stop string. `hit` turns true at the first stop string (the text is cut before it)."""

    def __init__(self, stops: list[str]):
        self.stops, self.hold = stops, max((len(s) for s in stops), default=1) - 1
        self.buf, self.hit = "", False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        self.buf += text
        found = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.buf, self.hit = self.buf[:min(found)], "", True
            return out
        cut = max(0, len(self.buf) - self.hold)
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.hit else self.buf), ""
        return out


def error_tuple_to_api(result: tuple) -> ApiError:
    return ApiError(*result[1:])


async def generate(engine, task: TextTask, stops: list[str], timeout: float) -> AsyncIterator[Union[str, dict]]:
    """Yields text pieces of one prompt (stop strings applied), then a dict {"finish_reason",
    "prompt_tokens", "completion_tokens"}. Raises ApiError when the generation fails. Closing the
    generator early (client gone) cancels the generation in the worker."""
    queue: asyncio.Queue = asyncio.Queue()
    engine.listen(task.id, queue.put_nowait)
    job = asyncio.ensure_future(engine.submit(task, timeout))
    job.add_done_callback(lambda _: queue.put_nowait(None))  # after the pieces (same loop, FIFO)
    cutter, streamed, prompt_tokens, pieces, unknown = StopCutter(stops), "", 0, 0, []
    try:
        while True:
            message = await queue.get()
            if message is None:
                break
            if "prompt_tokens" in message:
                prompt_tokens, unknown = message["prompt_tokens"], message.get("unknown_words", [])
                continue
            pieces += 1
            streamed += message["text"]
            out = cutter.feed(message["text"])
            if out:
                yield out
            if cutter.hit:
                yield {"finish_reason": "stop", "prompt_tokens": prompt_tokens, "completion_tokens": pieces,
                       "unknown_words": unknown}
                return
        try:
            result = job.result()
        except QueueFull as err:
            raise ApiError(503, "overloaded", f"{err}; retry later") from None
        except Closed as err:
            raise ApiError(503, "shutting_down", str(err)) from None
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no result within {timeout * 1000:g} ms") from None
        except WorkerDied as err:
            raise ApiError(503, "worker_died", f"{err}; it is being restarted, retry later") from None
        if result[0] != "ok":
            raise error_tuple_to_api(result)
        record = result[1]
        rest = record["text"][len(streamed):] if record["text"].startswith(streamed) else ""
        out = cutter.feed(rest) + cutter.flush()
        if out:
            yield out
        yield {"finish_reason": "stop" if cutter.hit or record["finish_reason"] == "eos" else "length",
               "prompt_tokens": record["prompt_tokens"], "completion_tokens": record["generated_tokens"],
               "unknown_words": record.get("unknown_words", unknown)}
    finally:
        engine.listen(task.id, None)
        if not job.done():
            job.cancel()  # queued: dropped; running: the worker stops at its next token


def _generates_text(engine) -> bool:
    return get_input_kind(engine.info.get("inputs", "image")).generates_text


def _chunk(head: dict, engine, index: int, text: str, finish: Optional[str]) -> dict:
    return {**head, "model": engine.model_name, "variant": engine.name,
            "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}]}


async def routed(st, engine, pinned: bool, task: TextTask, stops: list[str]):
    """Yields (engine, piece or final dict): `generate` on `engine`, retried once on the stable
    variant when it fails before its first piece (see the module doc)."""
    total = st.cfg.timeout_ms / 1000.0
    start = t0 = time.perf_counter()
    sent = False
    try:
        async for item in generate(engine, task, stops, st.first_timeout(engine, pinned)):
            sent = sent or isinstance(item, str)
            yield engine, item
    except ApiError as err:
        st.observe(engine, err.status, err.code, time.perf_counter() - t0)
        if sent or not st.may_retry(engine, pinned, err.status, err.code):
            raise
        st.metrics.retries.labels(engine.name).inc()
        engine, t0 = st.stable, time.perf_counter()
        try:
            async for item in generate(engine, task, stops, max(0.001, total - (t0 - start))):
                yield engine, item
        except ApiError as err2:
            st.observe(engine, err2.status, err2.code, time.perf_counter() - t0)
            raise
    st.observe(engine, 200, "", time.perf_counter() - t0)


async def collect(st, engine, pinned, task, stops) -> tuple:
    parts, final, used = [], {}, engine
    async for who, item in routed(st, engine, pinned, task, stops):
        used = who
        if isinstance(item, str):
            parts.append(item)
        else:
            final = item
    return used, "".join(parts), final


async def stream_events(st, head: dict, engine, pinned: bool, tasks: list, stops: list[str]):
    """Yields (engine, SSE bytes) for each prompt in turn, then [DONE]."""
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    started = False
    try:
        for index, task in enumerate(tasks):
            async for used, item in routed(st, engine, pinned, task, stops):
                started = True
                if isinstance(item, str):
                    yield used, _sse(_chunk(head, used, index, item, None))
                    continue
                usage["prompt_tokens"] += item["prompt_tokens"]
                usage["completion_tokens"] += item["completion_tokens"]
                last = _chunk(head, used, index, "", item["finish_reason"])
                last["choices"][0]["unknown_words"] = item.get("unknown_words", [])
                if index == len(tasks) - 1:
                    last["usage"] = {**usage, "total_tokens": sum(usage.values())}
                yield used, _sse(last)
            engine, pinned = used, True  # the other prompts on the same variant
    except ApiError as err:
        if not started:
            raise
        yield engine, _sse({"error": {"message": err.detail, "type": err.code, "code": err.status}})
    yield engine, b"data: [DONE]\n\n"


async def stream_response(st, head: dict, engine, pinned: bool, tasks: list, stops: list[str]):
    events = stream_events(st, head, engine, pinned, tasks, stops)
    first = await events.__anext__()  # an error before the first event is a plain HTTP error
    used = first[0]

    async def body():
        try:
            yield first[1]
            async for _, event in events:
                yield event
        finally:
            await events.aclose()  # client gone: cancels the generation

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"X-R1-Variant": used.name, "Cache-Control": "no-cache"})


async def all_or_none(coros: list):
    """The results of `coros` run together; at the first failure (or a cancel) the others are cancelled
    (their generations dropped from the queue or stopped in the worker), then the error is raised."""
    jobs = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [job for job in jobs if not job.done()]
        for job in pending:
            job.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # each one's cleanup ran before we answer
    failed = next((job for job in jobs if not job.cancelled() and job.exception() is not None), None)
    if failed is not None:  # the failure, not the cancellation it caused in the others
        raise failed.exception()
    return [job.result() for job in jobs]


async def answer(st, request: Request, head: dict, engine, pinned: bool, tasks: list, stops: list[str]):
    """The whole (non-streamed) completion of every prompt, as one JSON body."""
    try:
        answers = await unless_disconnected(request, all_or_none([collect(st, engine, pinned, t, stops)
                                                                 for t in tasks]))
    except ClientDisconnect:
        return JSONResponse({}, status_code=499)  # nobody reads it
    used = answers[0][0]
    usage = {"prompt_tokens": sum(a[2]["prompt_tokens"] for a in answers),
             "completion_tokens": sum(a[2]["completion_tokens"] for a in answers)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return JSONResponse({**head, "model": used.model_name, "variant": used.name,
                         "choices": [{"text": text, "index": i, "logprobs": None,
                                      "finish_reason": final["finish_reason"],
                                      "unknown_words": final.get("unknown_words", [])}
                                     for i, (_, text, final) in enumerate(answers)],
                         "usage": usage}, headers={"X-R1-Variant": used.name})


def _pick_engine(st, request: Request, req: CompletionRequest, prompts: int = 1):
    """The variant that answers `req` (404 when it names no served model or its model takes no text)."""
    names = {e.model_name for e in st.engines.values()}
    if req.model and req.model not in st.engines and req.model not in names:
        raise ApiError(404, "model_not_found", f"model: {req.model!r} is not served here; models: "
                       f"{', '.join(sorted(names | set(st.engines)))}")
    engine, pinned = st.route(request, req.model, req.user)
    st.check_ready(engine)
    if not _generates_text(engine):
        raise ApiError(404, "not_found", f"/v1/completions: variant {engine.name} takes "
                                         f"{engine.info.get('inputs')}, not text")
    return st.admit(engine, pinned, prompts), pinned  # every prompt needs a place: none is queued otherwise


def completions_route(app: FastAPI, st) -> None:
    """Register POST /v1/completions on `app` over the server state `st` (r1/serve/state.py)."""
    cfg = st.cfg

    @app.post("/v1/completions", summary="OpenAI-style text completion (language models); `stream: true` for "
              "server-sent events", openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": CompletionRequest.model_json_schema()}}}})
    async def completions(request: Request):
        st.check_ready(st.stable)
        if not _generates_text(st.stable):
            raise ApiError(404, "not_found", f"/v1/completions: this server's model takes "
                                             f"{st.stable.info.get('inputs')}, not text; use POST /v1/predict")
        body = parse_json(await request.body(), "{\"prompt\": \"...\"}", code="bad_json")
        req = parse_request(body, cfg.max_text_chars, cfg.max_new_tokens, cfg.max_prompts)
        engine, pinned = _pick_engine(st, request, req, len(prompts_of(req)))
        tasks = [TextTask(p, req.max_tokens, req.temperature, 0, req.top_p, req.seed, None, next(st.next_id),
                          stream=True) for p in prompts_of(req)]
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time())}
        if req.stream:
            return await stream_response(st, head, engine, pinned, tasks, stops_of(req))
        return await answer(st, request, head, engine, pinned, tasks, stops_of(req))


def _sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


