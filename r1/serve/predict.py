"""POST /v1/predict: read the request with the variant's input kind, queue it on the variant's
batcher, answer with the family's record (retried once on the stable variant when a canary fails).

The handler is also served past FastAPI's routing (`DirectRoute`, r1/serve/errors.py): a measurable
share of the per-request CPU at small models. Its FastAPI registration documents it in /docs.
"""
from __future__ import annotations

import asyncio
import logging
import time

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from r1.input_kinds import get_input_kind, input_kind_names
from r1.input_kinds.http import ApiError
from r1.serve.batcher import Closed, QueueFull
from r1.serve.disconnect import unless_disconnected
from r1.serve.engine import Engine
from r1.serve.schemas import ERRORS
from r1.serve.worker import WorkerDied

log = logging.getLogger(__name__)

def _merged(have: dict | None, new: dict) -> dict:
    """Two kinds' schemas of one media type: forms (untitled objects) merge their fields into one
    form; models (JSON bodies) become `oneOf` the models."""
    if have is None:
        return new if "title" not in new else {"oneOf": [new]}
    if "oneOf" in have:
        return have if new in have["oneOf"] else {"oneOf": [*have["oneOf"], new]}
    if have == new or "properties" not in have or "properties" not in new:
        return have
    return {"type": "object", "required": sorted(set(have.get("required", [])) & set(new.get("required", []))),
            "properties": {**have["properties"], **new["properties"]}}


def openapi_body() -> dict:
    """/v1/predict's request body in /docs: every input kind's media types and schemas."""
    schemas: dict[str, dict] = {}
    for name in input_kind_names():
        for media, entry in get_input_kind(name).openapi_content().items():
            schemas[media] = _merged(schemas.get(media), entry["schema"])
    return {"requestBody": {"required": True, "content": {m: {"schema": s} for m, s in schemas.items()}}}


async def attempt(st, engine: Engine, request: Request, task, long: bool, timeout: float | None = None) -> tuple:
    """Run `task` on `engine` within `timeout` s (default serve.timeout_ms) -> its result tuple;
    server-side failures as error tuples too."""
    cfg = st.cfg
    try:
        work = engine.submit(task, timeout if timeout is not None else cfg.timeout_ms / 1000.0)
        if long:  # generation: stop it when its caller goes away
            return await unless_disconnected(request, work)
        result = await work  # short: a watcher would cost more than the work it could save
        if await request.is_disconnected():
            raise ClientDisconnect()
        return result
    except QueueFull as err:
        return ("error", 503, "overloaded", f"{err}; retry later")
    except Closed as err:
        return ("error", 503, "shutting_down", str(err))
    except asyncio.TimeoutError:
        return ("error", 504, "timeout", f"no result within {(timeout or cfg.timeout_ms / 1000.0) * 1000:g} ms")
    except WorkerDied as err:
        return ("error", 503, "worker_died", f"{err}; it is being restarted, retry later")


async def _read(st, engine: Engine, request: Request):
    st.admitting += 1
    try:
        return await get_input_kind(engine.info["inputs"]).read_request(request, st)
    finally:
        st.admitting -= 1


def predict_handler(st):
    """The /v1/predict handler over the server state `st`."""
    cfg = st.cfg

    async def predict(request: Request):
        t0 = time.perf_counter()
        if not st.ready and not st.stable.ready:
            raise ApiError(503, "not_ready", st.stable.load_error or "model is loading; retry later", st.retry_headers)
        engine, pinned = st.route(request)
        st.check_ready(engine)
        engine = st.admit(engine, pinned)  # refuse before reading or decoding anything
        task = await _read(st, engine, request)
        long = get_input_kind(engine.info["inputs"]).generates_text
        t1 = time.perf_counter()
        result = await attempt(st, engine, request, task, long, st.first_timeout(engine, pinned))
        st.observe(engine, 200 if result[0] == "ok" else result[1], "" if result[0] == "ok" else result[2],
                   time.perf_counter() - t1)
        if result[0] != "ok" and st.may_retry(engine, pinned, *result[1:3]):
            st.metrics.retries.labels(engine.name).inc()
            log.info("variant %s failed a request (%s); answered by %s", engine.name, result[2], st.router.stable)
            engine, t1 = st.stable, time.perf_counter()
            left = max(0.001, cfg.timeout_ms / 1000.0 - (t1 - t0))
            result = await attempt(st, engine, request, task, long, left)
            st.observe(engine, 200 if result[0] == "ok" else result[1], "" if result[0] == "ok" else result[2],
                       time.perf_counter() - t1)
        headers = {"X-R1-Variant": engine.name}
        if result[0] != "ok":
            raise ApiError(*result[1:], {**headers, **(st.retry_headers if result[1] == 503 else {})})
        # A Response skips FastAPI's re-validation of the body (the schema still documents it in /docs)
        return JSONResponse({"model": engine.model_name, "variant": engine.name, "family": engine.info["family"],
                             "runtime": engine.info["runtime"],
                             "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "result": result[1]},
                            headers=headers)

    return predict


def register_predict(app, st, response_model):
    """Document POST /v1/predict in /docs; returns the handler, which `DirectRoute` serves."""
    handler = predict_handler(st)
    app.post("/v1/predict", response_model=response_model, responses=ERRORS, openapi_extra=openapi_body(),
             summary="Predict on one input: an image (multipart `file`, JSON base64 `image`, or a raw image/* "
                     "body), an image and a question, or a prompt (JSON `{\"text\": ...}`), by the model's "
                     "input kind")(handler)
    return handler
