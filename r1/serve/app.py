"""The R1 HTTP service: `create_app(ServeConfig(...))` -> FastAPI app.

The lifespan starts loading + warming the model in a thread, so `/healthz` answers at once and
`/readyz` says 503 until the model is warm; then a `DynamicBatcher` serves `/v1/predict`.
Shutdown (uvicorn stops accepting, waits for open requests, then the lifespan exits) drains the
batcher. Every error is a JSON `ErrorResponse`; bad input is a 4xx, never a 500.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from r1.serve import inputs
from r1.serve.batcher import Closed, DynamicBatcher, QueueFull
from r1.serve.errors import ApiError, BodyLimitMiddleware, MetricsMiddleware, error_response
from r1.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from r1.serve.schemas import ERRORS, Health, PredictResponse, Ready

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    model: str = ""                 # run dir, .safetensors or .onnx
    runtime: str = "torch"          # torch | onnx | tensorrt
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32             # run a batch at this many queued requests ...
    max_wait_ms: float = 5.0        # ... or this long after the oldest arrived
    max_queue: int = 256            # waiting requests beyond this get 503 + Retry-After
    timeout_ms: float = 30000.0     # per request, queue + inference; then 504
    threads: int = 1                # inference threads (torch intra-op / onnxruntime intra-op)
    max_body_bytes: int = 8 << 20   # 413 above this
    max_pixels: int = 4096 * 4096   # decoded image size limit (decompression bombs): 413
    top_k: int = 3                  # default classes per classification record
    warmup_runs: int = 2
    retry_after_s: int = 1

    def validate(self) -> None:
        from r1.errors import ConfigError

        for name in ("max_batch", "max_queue", "threads", "max_body_bytes", "max_pixels", "top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.timeout_ms <= 0:
            raise ConfigError("--max-wait-ms must be >= 0 and --timeout-ms > 0")


class _State:
    def __init__(self, cfg: ServeConfig):
        self.cfg, self.metrics = cfg, Metrics()
        self.predictor = None
        self.batcher: DynamicBatcher | None = None
        self.ready, self.load_error, self.load_seconds = False, None, None


def _default_loader(cfg: ServeConfig):
    from r1.export.runtime import Predictor

    return Predictor.load(cfg.model, runtime=cfg.runtime, threads=cfg.threads)


def create_app(cfg: ServeConfig, loader: Callable[[ServeConfig], object] | None = None) -> FastAPI:
    """`loader(cfg) -> Predictor` (default: `Predictor.load`); tests inject slow or fake ones."""
    cfg.validate()
    st = _State(cfg)
    loader = loader or _default_loader

    def run_batch(jobs: list[inputs.Job]) -> list[dict]:
        p = st.predictor
        batch = np.concatenate([j.array for j in jobs])  # (B, C, H, W)
        k = max(j.top_k for j in jobs)
        records = p.postprocess(p.forward(batch), top_k=k, images=[j.image for j in jobs])
        for rec, job in zip(records, jobs):
            if "top" in rec:
                rec["top"] = rec["top"][:job.top_k]
        return records

    def on_batch(size: int, waits: list[float], seconds: float) -> None:
        st.metrics.batch_size.observe(size)
        st.metrics.inference_seconds.observe(seconds)
        for w in waits:
            st.metrics.queue_wait.observe(w)

    def load_and_warm():
        t0 = time.perf_counter()
        p = loader(cfg)
        p.warmup(cfg.warmup_runs, tuple(sorted({1, cfg.max_batch})))
        return p, time.perf_counter() - t0

    async def load() -> None:
        try:
            st.predictor, st.load_seconds = await asyncio.to_thread(load_and_warm)
        except Exception as err:  # reported by /readyz; the process stays up for /healthz
            st.load_error = f"{type(err).__name__}: {err}"
            log.error("model load failed: %s", st.load_error)
            return
        st.batcher = DynamicBatcher(run_batch, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue,
                                    on_batch=on_batch, on_depth=st.metrics.queue_depth.set)
        st.batcher.start()
        st.metrics.model_load_seconds.set(st.load_seconds)
        st.metrics.ready.set(1)
        st.ready = True
        log.info("ready: %s (%s) loaded and warmed in %.2fs", cfg.model, cfg.runtime, st.load_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(load())
        try:
            yield
        finally:
            st.ready = False
            if not task.done():
                task.cancel()
            if st.batcher is not None:
                await st.batcher.close(drain=True)

    app = FastAPI(title="R1 model server", version="1", lifespan=lifespan,
                  description="Dynamic-batching inference for R1 models (`r1 serve`).")
    app.state.r1 = st
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=st.metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        if err.status in (503, 504, 413):
            st.metrics.rejected.labels(err.code).inc()
        return error_response(err.status, err.code, err.detail, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "bad_request")
        return error_response(err.status_code, code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        return error_response(422, "invalid_request", inputs.summarize_errors(err.errors()))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception):
        log.error("internal error on %s: %r", request.url.path, err)
        return error_response(500, "internal_error", f"{type(err).__name__} (see the server log)")

    @app.get("/healthz", response_model=Health, summary="Process is alive")
    async def healthz():
        return Health()

    @app.get("/readyz", response_model=Ready, summary="Model loaded and warm (503 until then)",
             responses={503: {"model": Ready}})
    async def readyz():
        p = st.predictor
        body = Ready(ready=st.ready, model=cfg.model, runtime=cfg.runtime,
                     family=getattr(p, "family", None), load_seconds=st.load_seconds,
                     detail=st.load_error or (None if st.ready else "loading"))
        return JSONResponse(body.model_dump(), status_code=200 if st.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=inputs.OPENAPI_BODY,
              summary="Predict on one image (multipart `file`, JSON base64 `image`, or a raw image/* body)")
    async def predict(request: Request):
        t0 = time.perf_counter()
        retry = {"Retry-After": str(cfg.retry_after_s)}
        if not st.ready:
            raise ApiError(503, "not_ready", st.load_error or "model is loading; retry later", retry)
        if st.batcher.depth >= cfg.max_queue:  # refuse before reading the body
            raise ApiError(503, "overloaded", f"queue full ({cfg.max_queue} waiting); retry later", retry)
        data, top_k = await inputs.read_image_request(request, st.predictor.family, cfg.top_k)
        decode = lambda: inputs.to_job(data, st.predictor, cfg.max_pixels, top_k)  # noqa: E731
        job = decode() if len(data) <= 64 * 1024 else await run_in_threadpool(decode)
        try:
            record = await st.batcher.submit(job, timeout=cfg.timeout_ms / 1000.0)
        except QueueFull as err:
            raise ApiError(503, "overloaded", f"{err}; retry later", retry) from None
        except Closed as err:
            raise ApiError(503, "shutting_down", str(err), retry) from None
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no result within {cfg.timeout_ms:g} ms") from None
        # A Response skips FastAPI's re-validation of the body (the schema still documents it in
        # /docs): a measurable share of the per-request CPU at small models.
        return JSONResponse({"model": cfg.model, "family": st.predictor.family, "runtime": st.predictor.runtime,
                             "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "result": record})

    return app


def check_model(cfg: ServeConfig) -> None:
    """Fail fast (one-line R1Error) on a bad path or runtime, before the server starts."""
    from r1.errors import ConfigError
    from r1.export.runtime import RUNTIMES, infer_runtime

    cfg.validate()
    if cfg.runtime not in RUNTIMES:
        raise ConfigError(f"--runtime: {cfg.runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}")
    if cfg.runtime == "tensorrt":
        from r1.export.tensorrt import require_tensorrt
        require_tensorrt()
    if infer_runtime(cfg.model) == "onnx":
        from r1.export.onnx import read_onnx_meta
        read_onnx_meta(cfg.model)
    else:
        from r1.artifacts import read_info
        read_info(cfg.model)


def serve(cfg: ServeConfig, log_level: str = "info") -> None:
    """Run the app with uvicorn (blocking) on cfg.host:cfg.port."""
    import uvicorn

    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level=log_level,
                timeout_graceful_shutdown=max(5, int(cfg.timeout_ms / 1000) + 1))
