"""The Open Inference Protocol (KServe / Triton "v2" REST) beside R1's own routes, for every family.

    GET  /v2                                       server metadata (name, version, extensions)
    GET  /v2/health/live | /v2/health/ready        200, or 400 while not ready (as Triton)
    GET  /v2/models/{name}[/versions/{v}]          model metadata: inputs, outputs (name, datatype, shape)
    GET  /v2/models/{name}[/versions/{v}]/ready    200 / 400
    GET  /v2/models/{name}[/versions/{v}]/config   Triton's ModelConfig: what `r1 export --format triton` writes
    POST /v2/models/{name}[/versions/{v}]/infer    tensors in, tensors out (JSON or binary tensor data)
    POST /v2/models/{name}[/versions/{v}]/generate[_stream]   Triton's generate extension (JSON fields)

`name` is the run's name (what R1's answers call `model`); a version is a variant (`r1 serve
stable=RUN_A canary=RUN_B`): `/versions/canary` pins it, no version routes as /v1/predict does
(weights, `X-R1-User`, rollback, retry on the stable variant). The answering variant is the
response's `model_version` and its `X-R1-Variant` header. A request's rows become one task each,
queued on the variant's dynamic batcher with /v1/predict's: v2 and R1 requests share batches.

The model's input kind (r1/input_kinds/) says what the tensors are (`v2_inputs`, `read_v2`) and turns
records into output tensors (`v2_tensors`): image models take raw RGB pixels `image` UINT8
[N, H, W, 3]; image+text models `image` BYTES (encoded files) + `question` BYTES; language models
`text_input` BYTES -> `text_output`. This module knows no kind and no family. Errors are
`{"error": "...", "code": "..."}` with a 4xx for anything the client sent (see r1/serve/v2_codec.py).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from r1.input_kinds import get_input_kind
from r1.input_kinds.http import ApiError
from r1.serve.completions import collect, routed
from r1.serve.disconnect import unless_disconnected
from r1.serve.predict import attempt
from r1.serve.v2_codec import (
    InferRequest,
    bad,
    check_inputs,
    decompress,
    encode_infer,
    json_array,
    nested_shape,
    parse_infer,
)
from r1.version import __version__

EXTENSIONS = ["binary_tensor_data", "model_configuration", "parameters", "generate"]
PLATFORMS = {"torch": "r1_torch", "onnx": "r1_onnxruntime", "onnx-int8": "r1_onnxruntime", "tensorrt": "r1_tensorrt"}
MAX_STOPS = 4


def v2_error(st, err: ApiError) -> JSONResponse:
    if err.status in (503, 504, 413):
        st.metrics.rejected.labels(err.code).inc()
    return JSONResponse({"error": err.detail, "code": err.code}, status_code=err.status, headers=err.headers)


def _route_class(st):
    class V2Route(APIRoute):
        """Errors in the protocol's form, `{"error": ...}`."""

        def get_route_handler(self):
            handler = super().get_route_handler()

            async def wrapped(request: Request):
                try:
                    return await handler(request)
                except ApiError as err:
                    return v2_error(st, err)
                except ClientDisconnect:
                    return Response(status_code=499)  # nobody reads it
            return wrapped
    return V2Route


class V2:
    """The v2 routes over the server state `st` (r1/serve/state.py)."""

    def __init__(self, st):
        self.st = st
        self.samples: dict[str, dict] = {}  # variant -> a record (outputs of families without a schema)
        self.configs: dict[str, dict] = {}
        self.config_lock = asyncio.Lock()

    # ------------------------------------------------------------------ which model, which variant
    def check_model(self, model: str) -> None:
        names = {e.model_name for e in self.st.engines.values()}
        if model not in names:
            raise ApiError(404, "model_not_found", f"model {model!r} is not served here; models: "
                                                   f"{', '.join(sorted(names))}")

    def fixed_engine(self, model: str, version: str | None):
        """The variant a request names (404 when it names none served here); no version: the stable one."""
        self.check_model(model)
        if version is None:
            return self.st.stable
        if version not in self.st.engines:
            raise ApiError(404, "version_not_found", f"model {model!r} has no version {version!r}; versions: "
                                                     f"{', '.join(self.st.engines)}")
        return self.st.engines[version]

    def engine(self, request: Request, model: str, version: str | None):
        """-> (the variant that answers, pinned?): the version named, else routed as /v1/predict."""
        if version is not None:
            return self.fixed_engine(model, version), True
        self.check_model(model)
        return self.st.route(request)

    @staticmethod
    def schema(engine):
        from r1.family import get_family

        try:
            spec = get_family(engine.info["family"])
            return spec.hook("schema") if spec.schema is not None else None
        except Exception:  # a family registered only where the model runs (tests' fakes): no schema
            return None

    # ------------------------------------------------------------------ metadata
    def metadata(self, model: str, version: str | None) -> dict:
        engine = self.fixed_engine(model, version)
        self.st.check_ready(engine)
        kind = get_input_kind(engine.info["inputs"])
        return {"name": model, "versions": list(self.st.engines),
                "platform": PLATFORMS.get(engine.info["runtime"], f"r1_{engine.info['runtime']}"),
                "inputs": kind.v2_inputs(),
                "outputs": kind.v2_outputs(self.schema(engine), self.samples.get(engine.name))}

    async def config(self, model: str, version: str | None) -> dict:
        """Triton's ModelConfig of the variant's model, as `r1 export RUN --format triton` writes it with
        this server's batching (max_batch_size = serve.max_batch, max_queue_delay = serve.max_wait_ms)."""
        engine = self.fixed_engine(model, version)
        async with self.config_lock:
            if engine.name not in self.configs:
                try:
                    self.configs[engine.name] = await asyncio.to_thread(_triton_config, engine)
                except Exception as err:  # no ONNX export for this model (a TensorRT engine, a fake)
                    raise ApiError(400, "config_unavailable", f"no Triton model configuration for {model!r}: "
                                                              f"{type(err).__name__}: {err}"[:300]) from None
        return self.configs[engine.name]

    # ------------------------------------------------------------------ inference
    async def run(self, request: Request, engine, pinned: bool, tasks: list, long: bool):
        """Every task on the variant's batcher -> (engine that answered, records); retried once on the
        stable variant like /v1/predict; ApiError when a task failed."""
        st = self.st
        t0 = time.perf_counter()
        results = await asyncio.gather(*(attempt(st, engine, request, t, long) for t in tasks))
        failed = next((r for r in results if r[0] != "ok"), None)
        st.observe(engine, 200 if failed is None else failed[1], "" if failed is None else failed[2],
                   time.perf_counter() - t0)
        if failed is not None and st.may_retry(engine, pinned, *failed[1:3]):
            st.metrics.retries.labels(engine.name).inc()
            engine, t0 = st.stable, time.perf_counter()
            results = await asyncio.gather(*(attempt(st, engine, request, t, long) for t in tasks))
            failed = next((r for r in results if r[0] != "ok"), None)
            st.observe(engine, 200 if failed is None else failed[1], "" if failed is None else failed[2],
                       time.perf_counter() - t0)
        if failed is not None:
            raise ApiError(*failed[1:], {"X-R1-Variant": engine.name,
                                         **(st.retry_headers if failed[1] == 503 else {})})
        records = [r[1] for r in results]
        self.samples.setdefault(engine.name, records[0])
        return engine, records

    async def tasks(self, engine, req: InferRequest) -> list:
        """The request's rows as the variant's tasks (its input kind reads them)."""
        st = self.st
        kind = get_input_kind(engine.info["inputs"])
        declared = kind.v2_inputs()
        if not declared:
            raise bad(f"this model takes {kind.name} inputs, which have no v2 tensor form; use POST /v1/predict",
                      "v2_not_supported")
        tensors = check_inputs(req, declared, st.cfg.max_batch)
        unknown = sorted(set(req.parameters) - set(kind.v2_parameters))
        if unknown:
            raise bad(f"parameter {unknown[0]!r} is not read by this model; parameters: "
                      f"{', '.join(kind.v2_parameters) or 'none'}", "unknown_parameter")
        rows = len(next(iter(tensors.values())))
        if st.admitting + engine.batcher.depth + rows > st.cfg.max_queue:
            raise ApiError(503, "overloaded", f"queue full ({st.cfg.max_queue} waiting); retry later", st.retry_headers)
        return await kind.read_v2(tensors, req.parameters, st)

    async def infer(self, request: Request, model: str, version: str | None) -> Response:
        st = self.st
        engine, pinned = self.engine(request, model, version)
        st.check_ready(engine)
        st.admitting += 1
        try:
            body = decompress(await request.body(), request.headers.get("content-encoding"), st.cfg.max_body_bytes)
            req = parse_infer(body, request.headers.get("inference-header-content-length"))
            tasks = await self.tasks(engine, req)
        finally:
            st.admitting -= 1
        kind = get_input_kind(engine.info["inputs"])
        engine, records = await self.run(request, engine, pinned, tasks, kind.generates_text)
        tensors = kind.v2_tensors(records, self.schema(engine))
        head = {"model_name": model, "model_version": engine.name, **({"id": req.id} if req.id is not None else {})}
        body, headers = encode_infer(head, tensors, req.binary_outputs(list(tensors)))
        return Response(body, headers={**headers, "X-R1-Variant": engine.name})

    # ------------------------------------------------------------------ generate extension
    async def generate(self, request: Request, model: str, version: str | None, stream: bool) -> Response:
        """JSON fields -> input tensors of one row, outputs -> JSON fields. Models that generate text
        stream pieces as they are decoded (`text_output`), stop strings (`parameters.stop`) applied."""
        st = self.st
        engine, pinned = self.engine(request, model, version)
        st.check_ready(engine)
        kind = get_input_kind(engine.info["inputs"])
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise bad("body: not valid JSON; send {\"text_input\": \"...\", \"parameters\": {...}}",
                      "malformed_json") from None
        if not isinstance(body, dict):
            raise bad("body: expected a JSON object of input fields and `parameters`")
        params = dict(body.get("parameters") or {}) if isinstance(body.get("parameters") or {}, dict) else None
        if params is None:
            raise bad("parameters: expected an object")
        stops = _stops(params.pop("stop", None)) if kind.generates_text else []
        params.pop("stream", None)  # the route says whether to stream (vLLM clients send it too)
        inputs, datatypes = {}, {}
        declared = {d["name"]: d["datatype"] for d in kind.v2_inputs()}
        for name, value in body.items():
            if name in ("parameters", "id"):
                continue
            if name not in declared:
                raise bad(f"field {name!r} is not an input of this model; inputs: {', '.join(declared)}",
                          "unknown_input")
            inputs[name] = json_array(name, declared[name], (1, *nested_shape(value, name)), value)
            datatypes[name] = declared[name]
        req = InferRequest(None, inputs, datatypes, None, params)
        tasks = await self.tasks(engine, req)
        head = {"model_name": model}
        if not kind.generates_text:
            engine, records = await self.run(request, engine, pinned, tasks, False)
            fields = {n: _field(a[0]) for n, a in kind.v2_tensors(records, self.schema(engine)).items()}
            answer = {**head, "model_version": engine.name, **fields}
            if stream:
                return StreamingResponse(iter([_sse(answer)]), media_type="text/event-stream",
                                         headers={"X-R1-Variant": engine.name})
            return JSONResponse(answer, headers={"X-R1-Variant": engine.name})
        task = dataclasses.replace(tasks[0], stream=True)
        if not stream:
            used, text, final = await unless_disconnected(request, collect(st, engine, pinned, task, stops))
            return JSONResponse({**head, "model_version": used.name, "text_output": text, **_final(final)},
                                headers={"X-R1-Variant": used.name})
        return await self.stream(head, engine, pinned, task, stops)

    async def stream(self, head: dict, engine, pinned: bool, task, stops: list[str]) -> Response:
        events = routed(self.st, engine, pinned, task, stops)
        used, first = await events.__anext__()  # a failure before the first piece is a plain HTTP error

        def event(who, item) -> bytes:
            if isinstance(item, str):
                return _sse({**head, "model_version": who.name, "text_output": item})
            return _sse({**head, "model_version": who.name, "text_output": "", **_final(item)})

        async def body():
            try:
                yield event(used, first)
                async for who, item in events:
                    yield event(who, item)
            except ApiError as err:  # after the first event: the stream ends with the error
                yield _sse({"error": err.detail, "code": err.code})
            finally:
                await events.aclose()  # client gone: cancels the generation

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"X-R1-Variant": used.name, "Cache-Control": "no-cache"})


def _triton_config(engine) -> dict:
    from r1.config_commands import auto_preferred
    from r1.export.triton import TritonSettings, repository_config
    from r1.inference.runtimes import onnx_file

    cfg = engine.cfg
    settings = TritonSettings(name=engine.model_name, max_batch_size=cfg.max_batch,
                              preferred_batch_sizes=tuple(auto_preferred(cfg.max_batch)),
                              max_queue_delay_us=round(cfg.max_wait_ms * 1000))
    return repository_config(onnx_file(cfg.model), engine.model_name, settings)


def _stops(value) -> list[str]:
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise bad(f"parameter stop: a string or a list of at most {MAX_STOPS} non-empty strings", "bad_parameter")
    return stops


def _final(final: dict) -> dict:
    return {"finish_reason": final.get("finish_reason"), "prompt_tokens": final.get("prompt_tokens"),
            "generated_tokens": final.get("completion_tokens")}


def _field(row):
    """One row of an output tensor as a JSON value (a scalar for per-row scalars)."""
    if isinstance(row, bytes):
        return row.decode("utf-8", "replace")
    if isinstance(row, np.ndarray):
        return [_field(x) for x in row] if row.dtype == object else row.tolist()
    return row.item()


def _sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def v2_router(st) -> APIRouter:
    """The v2 routes (module doc) over the server state `st`."""
    v2 = V2(st)
    router = APIRouter(route_class=_route_class(st), tags=["Open Inference Protocol (v2)"])

    @router.get("/v2", summary="Server metadata: name, version, protocol extensions")
    async def server_metadata():
        return {"name": "r1", "version": __version__, "extensions": EXTENSIONS}

    @router.get("/v2/health/live", summary="The server process answers")
    async def live():
        return {"live": True}

    @router.get("/v2/health/ready", summary="Ready for inference (400 until the model is loaded and warm)")
    async def ready():
        return JSONResponse({"ready": st.ready}, status_code=200 if st.ready else 400)

    def both(method, path: str, summary: str):
        """Register `path` and its `/versions/{version}` form."""
        def register(fn):
            head, _, tail = path.partition("{model}")
            for p in (path, f"{head}{{model}}/versions/{{version}}{tail}"):
                router.add_api_route(p, fn, methods=[method], summary=summary)
            return fn
        return register

    @both("GET", "/v2/models/{model}", "Model metadata: inputs and outputs (name, datatype, shape), versions")
    async def model_metadata(model: str, version: str | None = None):
        return v2.metadata(model, version)

    @both("GET", "/v2/models/{model}/ready", "The model (variant) is ready (400 until then)")
    async def model_ready(model: str, version: str | None = None):
        engine = v2.fixed_engine(model, version)
        return JSONResponse({"name": model, "ready": engine.ready}, status_code=200 if engine.ready else 400)

    @both("GET", "/v2/models/{model}/config", "Triton's model configuration (as `r1 export --format triton` "
          "writes it, with this server's batching)")
    async def model_config(model: str, version: str | None = None):
        return await v2.config(model, version)

    @both("POST", "/v2/models/{model}/infer", "Inference: tensors in, tensors out (JSON or binary tensor data)")
    async def infer(request: Request, model: str, version: str | None = None):
        return await v2.infer(request, model, version)

    @both("POST", "/v2/models/{model}/generate", "Triton's generate extension: JSON fields in and out")
    async def generate(request: Request, model: str, version: str | None = None):
        return await v2.generate(request, model, version, stream=False)

    @both("POST", "/v2/models/{model}/generate_stream", "Triton's generate extension, as server-sent events")
    async def generate_stream(request: Request, model: str, version: str | None = None):
        return await v2.generate(request, model, version, stream=True)

    return router
