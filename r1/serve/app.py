"""The R1 HTTP service: `create_app(ServeConfig(...))` -> FastAPI app.

The lifespan starts loading + warming the model (in a worker process by default, or a thread),
so `/healthz` answers at once and `/readyz` says 503 until the model is warm; then a
`DynamicBatcher` serves `/v1/predict`. The event loop parses requests into tasks (`r1.serve.work`)
and decodes only tiny images (`inline_decode_pixels`, read from the header: a bounded ~0.1 ms);
small ones (bytes and pixels from the header) are decoded by decode threads, the rest by the
worker, which also preprocesses, runs the model and post-processes. Admission control counts
requests being read or decoded with the queued ones (`max_queue`), so decode work is bounded too.
Shutdown (uvicorn stops accepting, waits for open requests, then the lifespan exits) drains the
batcher, then stops the worker. Every error is a JSON `ErrorResponse`; bad input is a 4xx, never a 500.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import itertools
import logging
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from r1.config_commands import ServeConfig  # noqa: F401  (typed `serve` section; re-exported)
from r1.serve import inputs
from r1.serve.batcher import Closed, DynamicBatcher, QueueFull
from r1.serve.errors import ApiError, BodyLimitMiddleware, DirectRoute, MetricsMiddleware, error_response
from r1.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from r1.serve.schemas import ERRORS, Health, PredictResponse, Ready
from r1.serve.supervisor import Supervisor
from r1.serve.work import ImageTask, prepare_image, run_tasks
from r1.serve.worker import InferenceProcess, WorkerDied, describe, load_and_warm

log = logging.getLogger(__name__)


class _State:
    def __init__(self, cfg: ServeConfig):
        self.cfg, self.metrics = cfg, Metrics()
        self.info: dict = {}  # family, runtime, load_seconds of the loaded model
        self.supervisor: Supervisor | None = None  # the inference process (inference="process")
        self.cancelled: set[int] = set()  # inference="thread": ids of tasks whose caller gave up
        self.next_id = itertools.count(1)
        self.batcher: DynamicBatcher | None = None
        self.ready, self.load_error, self.load_seconds = False, None, None
        self.watcher: asyncio.Task | None = None
        self.admitting = 0  # requests past admission that are not in the batch queue yet (reading, decoding)
        # small uploads are decoded here, in threads: never on the event loop (PIL releases the GIL)
        self.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="r1-decode")

    @property
    def worker(self) -> InferenceProcess | None:
        return None if self.supervisor is None else self.supervisor.worker


def model_name(path: str) -> str:
    """The name responses give the served model: `runs/digits`, `runs/digits/model.safetensors`,
    `runs/digits/onnx/model-<hash>.onnx` -> "digits"; `exports/net.onnx` -> "net"."""
    p = Path(path).resolve() if path else Path("model")
    if p.suffix:
        if not p.stem.startswith("model"):
            return p.stem
        p = p.parent.parent if p.parent.name == "onnx" else p.parent
    return p.name or "model"


_ABS_PATH = re.compile(r"(?<![\w.~/-])/(?:[^\s/:'\"(),]+/)*([^\s/:'\"(),]+)")


def redact_paths(text: str) -> str:
    """Absolute paths -> their last part: errors that clients see never show the server's files."""
    return _ABS_PATH.sub(r"\1", text)


def _default_loader(cfg: ServeConfig):
    from r1.export.runtime import Predictor

    return Predictor.load(cfg.model, runtime=cfg.runtime, threads=cfg.threads)


def create_app(cfg: ServeConfig, loader: Callable[[ServeConfig], object] | None = None) -> FastAPI:
    """`loader(cfg) -> Predictor` (default: `Predictor.load`); tests inject slow or fake ones.
    With `cfg.inference == "process"` the loader runs in the worker process: it must be picklable."""
    cfg.validate()
    st = _State(cfg)
    loader = loader or _default_loader
    name = model_name(cfg.model)  # what responses say: never the server's file paths

    def worker_down(reason: str) -> None:
        st.ready, st.load_error = False, redact_paths(reason)
        st.metrics.ready.set(0)

    def worker_up(info: dict) -> None:
        st.info, st.load_error, st.ready = info, None, True
        st.metrics.ready.set(1)

    def run_in_thread(predictor, tasks: list) -> list[tuple]:
        try:
            return run_tasks(predictor, tasks, cfg.max_pixels, st.cancelled)
        finally:
            st.cancelled.difference_update(t.id for t in tasks)

    def abandoned(task) -> None:
        """A task's caller timed out or went away while the task ran: stop it (generation)."""
        st.metrics.cancelled.inc()
        if st.supervisor is not None:
            st.supervisor.cancel(task.id)
        else:
            st.cancelled.add(task.id)

    def on_batch(size: int, waits: list[float], seconds: float) -> None:
        st.metrics.batch_size.observe(size)
        st.metrics.inference_seconds.observe(seconds)
        for w in waits:
            st.metrics.queue_wait.observe(w)

    async def load() -> None:
        try:
            if cfg.inference == "process":
                st.supervisor = Supervisor(loader, cfg, st.metrics, on_up=worker_up, on_down=worker_down)
                st.info = await st.supervisor.start()
                run_batch = st.supervisor.call
            else:
                predictor, seconds = await asyncio.to_thread(load_and_warm, loader, cfg)
                st.info = describe(predictor, seconds)
                run_batch = functools.partial(run_in_thread, predictor)
        except Exception as err:  # reported by /readyz; the process stays up for /healthz
            log.error("model load failed: %s: %s", type(err).__name__, err)
            st.load_error = redact_paths(f"{type(err).__name__}: {err}")
            return
        st.load_seconds = st.info["load_seconds"]
        st.batcher = DynamicBatcher(run_batch, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue,
                                    on_batch=on_batch, on_depth=st.metrics.queue_depth.set, on_abandon=abandoned,
                                    expected=(WorkerDied,))
        st.batcher.start()
        if st.supervisor is not None:
            st.watcher = asyncio.create_task(st.supervisor.watch(), name="r1-supervisor")
        st.metrics.model_load_seconds.set(st.load_seconds)
        st.metrics.ready.set(1)
        st.ready = True
        log.info("ready: %s (%s, inference in a %s) loaded and warmed in %.2fs", cfg.model, cfg.runtime,
                 cfg.inference, st.load_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(load())
        try:
            yield
        finally:
            st.ready = False
            loading = not task.done()
            if loading:
                task.cancel()
            if st.watcher is not None:
                st.watcher.cancel()
            if st.batcher is not None:
                await st.batcher.close(drain=True)
            if st.supervisor is not None:  # after the drain: the worker finishes what it was given
                await st.supervisor.stop(0.0 if loading else 10.0)
            st.decode_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="R1 model server", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Dynamic-batching inference for R1 models (`r1 serve`).")
    app.state.r1 = st
    _mount_docs(app)

    def api_error(err: ApiError) -> JSONResponse:
        if err.status in (503, 504, 413):
            st.metrics.rejected.labels(err.code).inc()
        return error_response(err.status, err.code, err.detail, err.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return api_error(err)

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

    @app.get("/healthz", response_model=Health, summary="Process is alive (503: its inference process died "
             "and could not be restarted)", responses={503: {"model": Health}}, response_model_exclude_none=True)
    async def healthz():
        failed = st.supervisor.failed if st.supervisor is not None else None
        if failed:
            return JSONResponse(Health(status="failing", detail=redact_paths(failed)).model_dump(), status_code=503)
        return Health()

    @app.get("/readyz", response_model=Ready, summary="Model loaded and warm (503 until then)",
             responses={503: {"model": Ready}})
    async def readyz():
        if st.supervisor is not None:  # notice a dead or stuck worker now, not at the next heartbeat
            st.supervisor.check()
        body = Ready(ready=st.ready, model=name, runtime=cfg.runtime,
                     family=st.info.get("family"), load_seconds=st.load_seconds,
                     detail=st.load_error or (None if st.ready else "loading"))
        return JSONResponse(body.model_dump(), status_code=200 if st.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=inputs.OPENAPI_BODY,
              summary="Predict on one image (multipart `file`, JSON base64 `image`, or a raw image/* body), "
                      "or generate text (language models: JSON `{\"text\": ...}`)")
    async def predict(request: Request):
        t0 = time.perf_counter()
        retry = {"Retry-After": str(cfg.retry_after_s)}
        if not st.ready:
            raise ApiError(503, "not_ready", st.load_error or "model is loading; retry later", retry)
        if st.admitting + st.batcher.depth >= cfg.max_queue:  # refuse before reading or decoding anything
            raise ApiError(503, "overloaded", f"queue full ({cfg.max_queue} waiting); retry later", retry)
        family, text = st.info["family"], st.info["inputs"] == "text"
        st.admitting += 1
        try:
            if text:  # an id lets a generation be stopped when its caller gives up
                task = await inputs.read_text_request(request, cfg.max_text_chars, cfg.max_new_tokens)
                task = dataclasses.replace(task, id=next(st.next_id))
            else:
                data, top_k = await inputs.read_image_request(request, cfg.top_k)
                if len(data) <= cfg.prepare_max_bytes:  # decoded by the server: it unloads the worker
                    # the header decides: tiny images here (a bounded ~0.1 ms), larger ones in threads
                    task = prepare_image(data, top_k, cfg.max_pixels, cfg.inline_decode_pixels)
                    if task.data is not None and cfg.prepare_max_pixels > cfg.inline_decode_pixels:
                        task = await asyncio.get_running_loop().run_in_executor(
                            st.decode_pool, prepare_image, data, top_k, cfg.max_pixels, cfg.prepare_max_pixels)
                else:
                    task = ImageTask(top_k, data=data)
        finally:
            st.admitting -= 1
        try:
            work = st.batcher.submit(task, timeout=cfg.timeout_ms / 1000.0)
            if text:  # long: stop it when its caller goes away
                result = await _unless_disconnected(request, work)
            else:  # short: a watcher would cost more than the work it could save
                result = await work
                if await request.is_disconnected():
                    raise ClientDisconnect()
        except QueueFull as err:
            raise ApiError(503, "overloaded", f"{err}; retry later", retry) from None
        except Closed as err:
            raise ApiError(503, "shutting_down", str(err), retry) from None
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no result within {cfg.timeout_ms:g} ms") from None
        except WorkerDied as err:
            raise ApiError(503, "worker_died", f"{err}; it is being restarted, retry later", retry) from None
        if result[0] != "ok":
            raise ApiError(*result[1:])
        # A Response skips FastAPI's re-validation of the body (the schema still documents it in
        # /docs): a measurable share of the per-request CPU at small models.
        return JSONResponse({"model": name, "family": family, "runtime": st.info["runtime"],
                             "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "result": result[1]})

    # outermost first: metrics, body limit, then POST /v1/predict past FastAPI's routing
    app.add_middleware(DirectRoute, path="/v1/predict", method="POST", handler=predict, on_error=api_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes, timeout_s=cfg.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=st.metrics)
    return app


async def _unless_disconnected(request: Request, work):
    """Await `work` (the request's place in the batcher); if the client disconnects first, cancel it
    (dropped from the queue, or stopped in the worker) and raise ClientDisconnect."""
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait((job, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not job.done():
        job.cancel()
        raise ClientDisconnect()
    return job.result()


async def _disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


DOCS_ASSETS = "/docs/assets"


def _mount_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the packaged bundle (swagger-ui-bundle), served by this server, so the
    page works on a machine without internet access (FastAPI's default loads it from a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=base + app.openapi_url, title=f"{app.title} - docs",
                                   swagger_js_url=f"{base}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{base}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{base}{DOCS_ASSETS}/favicon-32x32.png")


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
        from r1.export.runtime import check_runtime
        check_runtime(read_info(cfg.model)["family"], cfg.runtime)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (ConfigError, exit 2, naming the port when it is taken or
    the address cannot be used), bound before the model loads so that a taken port fails fast."""
    from r1.errors import ConfigError

    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"--host {host!r}: not an address this machine can listen on ({err})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as err:
        sock.close()
        why = "already in use by another process; pick another --port" if err.errno == errno.EADDRINUSE \
            else err.strerror
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port}: {why}") from None
    return sock


def serve(cfg: ServeConfig, log_level: str = "info") -> None:
    """Run the app with uvicorn (blocking) on cfg.host:cfg.port."""
    import uvicorn

    sock = bind_socket(cfg.host, cfg.port)
    try:
        uvicorn.Server(uvicorn_config(create_app(cfg), log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()


def uvicorn_config(app: FastAPI, **options):
    """uvicorn's settings for an app of `create_app`: the header-timeout protocol, the access log
    per `serve.access_log` (~0.1 ms of event-loop CPU per request: off unless asked for) and a
    graceful-shutdown limit past the request timeout. `options` override them."""
    import uvicorn

    from r1.serve.protocol import with_header_timeout

    cfg = app.state.r1.cfg
    return uvicorn.Config(app, **{"http": with_header_timeout(cfg.header_timeout_s), "access_log": cfg.access_log,
                                  "timeout_graceful_shutdown": max(5, int(cfg.timeout_ms / 1000) + 1), **options})
