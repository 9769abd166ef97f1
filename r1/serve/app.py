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
import hmac
import itertools
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from r1.config_commands import ServeConfig, model_name  # noqa: F401  (re-exported)
from r1.serve import inputs
from r1.serve.batcher import Closed, QueueFull
from r1.serve.completions import completions_route
from r1.serve.disconnect import unless_disconnected
from r1.serve.engine import Engine, redact_paths
from r1.serve.errors import ApiError, BodyLimitMiddleware, DirectRoute, MetricsMiddleware, error_response
from r1.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from r1.serve.schemas import ERRORS, Health, PredictResponse, Ready
from r1.serve.variants import RollbackRules, Router
from r1.serve.work import ImageTask, prepare_image
from r1.serve.worker import InferenceProcess, WorkerDied

log = logging.getLogger(__name__)


class _State:
    def __init__(self, cfg: ServeConfig):
        self.cfg, self.metrics = cfg, Metrics()
        self.engines: dict[str, Engine] = {}  # one per variant, in declaration order
        self.router: Router | None = None
        self.next_id = itertools.count(1)
        self.ready = False
        self.admitting = 0  # requests past admission that are not in the batch queue yet (reading, decoding)
        # small uploads are decoded here, in threads: never on the event loop (PIL releases the GIL)
        self.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="r1-decode")

    @property
    def stable(self) -> Engine:
        return self.engines[self.router.stable]

    # the stable variant's parts (single-model servers: the model's)
    @property
    def worker(self) -> InferenceProcess | None:
        return self.stable.worker

    @property
    def supervisor(self):
        return self.stable.supervisor

    @property
    def batcher(self):
        return self.stable.batcher

    @property
    def info(self) -> dict:
        return self.stable.info


def _default_loader(cfg: ServeConfig):
    from r1.inference.predictor import Predictor

    return Predictor.load(cfg.model, runtime=cfg.runtime, threads=cfg.threads)


RETRY_CODES = ("generation_failed", "inference_failed", "non_finite_output", "worker_died", "internal_error")
NOT_COUNTED = ("overloaded", "shutting_down", "not_ready", "cancelled")  # the server's state, not the model's


def create_app(cfg: ServeConfig, loader: Callable[[ServeConfig], object] | None = None) -> FastAPI:
    """`loader(cfg) -> Predictor` (default: `Predictor.load`); tests inject slow or fake ones. With
    several variants the loader is called once per variant, with `cfg.model` set to its model.
    With `cfg.inference == "process"` the loader runs in the worker process: it must be picklable."""
    cfg.validate()
    st = _State(cfg)
    loader = loader or _default_loader
    admin_token = cfg.admin_token or os.environ.get("R1_ADMIN_TOKEN", "")
    st.router = Router(cfg.weights(), cfg.stable_name(),
                       RollbackRules(cfg.rollback_window, cfg.rollback_min_requests, cfg.rollback_error_rate,
                                     cfg.rollback_p95_factor, cfg.rollback_p95_floor_ms / 1000.0))
    for vname, weight in st.router.weights.items():
        st.metrics.variant_weight.labels(vname).set(weight)

    def readiness_changed() -> None:
        """Ready when the stable variant is, and every other one that gets traffic."""
        st.ready = bool(st.engines) and all(e.ready or (n != st.router.stable and st.router.weights[n] == 0)
                                            for n, e in st.engines.items())
        st.metrics.ready.set(int(st.ready))
        for n, e in st.engines.items():
            st.metrics.variant_ready.labels(n).set(int(e.ready))

    def depth_changed() -> None:
        st.metrics.queue_depth.set(sum(e.batcher.depth for e in st.engines.values() if e.batcher is not None))

    for vname, path in cfg.variant_models().items():
        engine = Engine(vname, dataclasses.replace(cfg, model=path, variants={}, traffic={}), loader, st.metrics,
                        readiness_changed, depth_changed)
        engine.model_name = model_name(path)  # what responses say: never the server's file paths
        st.engines[vname] = engine

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(e.load()) for e in st.engines.values()]
        try:
            yield
        finally:
            st.ready = False
            loading = any(not t.done() for t in tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*(e.close(loading) for e in st.engines.values()))
            st.decode_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="R1 model server", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Dynamic-batching inference for R1 models (`r1 serve`), with A/B and canary "
                              "variants and OpenAI-style `/v1/completions` for language models.")
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
        for e in st.engines.values():  # notice a dead or stuck worker now, not at the next heartbeat
            if e.supervisor is not None:
                e.supervisor.check()
        stable = st.stable
        problems = [f"variant {n}: {e.load_error}" for n, e in st.engines.items() if e.load_error]
        detail = (stable.load_error if len(st.engines) == 1 else "; ".join(problems)) or \
            (None if st.ready else "loading")
        body = Ready(ready=st.ready, model=stable.model_name, runtime=stable.cfg.runtime,
                     family=stable.info.get("family"), load_seconds=stable.load_seconds, detail=detail,
                     variants={n: e.ready for n, e in st.engines.items()})
        return JSONResponse(body.model_dump(exclude_none=False), status_code=200 if st.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ variants: routing, rollback, admin
    def route(request: Request, model: str | None = None, user: str | None = None) -> tuple[Engine, bool]:
        """-> (the variant for this request, pinned?): `X-R1-Variant` (or a completion's `model`
        naming a variant) pins one; else sticky on `X-R1-User`, else weighted random."""
        pin = request.headers.get("x-r1-variant") or (model if model in st.engines else None)
        if pin:
            if pin not in st.engines:
                raise ApiError(400, "unknown_variant", f"X-R1-Variant: {pin!r} is not a variant; variants: "
                                                       f"{', '.join(st.engines)}")
            return st.engines[pin], True
        name = st.router.pick(request.headers.get("x-r1-user") or user, usable=lambda n: st.engines[n].ready)
        return st.engines[name], False

    def observe(engine: Engine, status: int, code: str, seconds: float) -> None:
        """Count one answer of `engine` (metrics, rollback window); roll it back when a rule says so."""
        st.metrics.variant_requests.labels(engine.name, str(status)).inc()
        if code in NOT_COUNTED:
            return
        failed = status >= 500
        if failed:
            st.metrics.variant_errors.labels(engine.name).inc()
        else:
            st.metrics.variant_seconds.labels(engine.name).observe(seconds)
        why = st.router.record(engine.name, not failed, seconds)
        if why:
            rule = "error_rate" if why.startswith("error") else "p95"
            st.metrics.rollbacks.labels(engine.name, rule).inc()
            st.metrics.variant_weight.labels(engine.name).set(0)
            log.warning("rollback: variant %s weight -> 0 (%s); traffic continues on %s", engine.name, why,
                        ", ".join(n for n, w in st.router.weights.items() if w > 0))
            readiness_changed()

    def may_retry(engine: Engine, pinned: bool, status: int, code: str) -> bool:
        return (cfg.retry_on_stable and not pinned and engine.name != st.router.stable and status >= 500
                and code in RETRY_CODES and st.stable.ready)

    def variants_body() -> dict:
        rows = st.router.describe()
        for row in rows:
            e = st.engines[row["name"]]
            row.update(model=e.model_name, ready=e.ready, family=e.info.get("family"))
        return {"stable": st.router.stable, "variants": rows}

    @app.get("/v1/variants", summary="Variants: weights, share, requests, errors, error rate and p95 over the "
             "rollback window, rollback reason")
    async def get_variants():
        return JSONResponse(variants_body())

    @app.post("/v1/variants", summary="Change routing weights at run time: `{\"weights\": {\"canary\": 10}}` "
              "with `Authorization: Bearer <admin token>` (the route exists only with --admin-token)")
    async def post_variants(request: Request):
        if not admin_token:
            raise ApiError(404, "not_found", "POST /v1/variants is off: start the server with --admin-token "
                                             "(or R1_ADMIN_TOKEN) to change weights at run time")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <admin token>",
                           {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), admin_token.encode()):
            raise ApiError(403, "forbidden", "wrong admin token")
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "bad_json", "body: not JSON; send {\"weights\": {\"NAME\": WEIGHT, ...}}") from None
        weights = body.get("weights") if isinstance(body, dict) else None
        if not isinstance(weights, dict) or not weights or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights.values()):
            raise ApiError(422, "invalid_request", "weights: expected {\"NAME\": number >= 0, ...}")
        try:
            st.router.set_weights(weights)
        except ValueError as err:
            raise ApiError(422, "invalid_request", f"weights: {err}") from None
        for n, w in st.router.weights.items():
            st.metrics.variant_weight.labels(n).set(w)
        readiness_changed()
        log.info("weights changed: %s", ", ".join(f"{n}={w:g}" for n, w in st.router.weights.items()))
        return JSONResponse(variants_body())

    # ------------------------------------------------------------------ /v1/predict
    retry = {"Retry-After": str(cfg.retry_after_s)}

    async def read_task(engine: Engine, request: Request):
        family, text = engine.info["family"], engine.info["inputs"] == "text"
        st.admitting += 1
        try:
            if text:  # an id lets a generation be stopped when its caller gives up
                task = await inputs.read_text_request(request, cfg.max_text_chars, cfg.max_new_tokens)
                return dataclasses.replace(task, id=next(st.next_id)), family, text
            question = None
            if engine.info["inputs"] == "image+text":
                data, top_k, question = await inputs.read_pair_request(request, cfg.top_k, cfg.max_text_chars)
            else:
                data, top_k = await inputs.read_image_request(request, cfg.top_k)
            task = await decode_task(data, top_k)
            return dataclasses.replace(task, text=question) if question is not None else task, family, text
        finally:
            st.admitting -= 1

    async def decode_task(data: bytes, top_k: int) -> ImageTask:
        if len(data) > cfg.prepare_max_bytes:
            return ImageTask(top_k, data=data)
        # decoded by the server (it unloads the worker); the header decides: tiny images here (a
        # bounded ~0.1 ms), larger ones in threads
        task = prepare_image(data, top_k, cfg.max_pixels, cfg.inline_decode_pixels)
        if task.data is not None and cfg.prepare_max_pixels > cfg.inline_decode_pixels:
            task = await asyncio.get_running_loop().run_in_executor(
                st.decode_pool, prepare_image, data, top_k, cfg.max_pixels, cfg.prepare_max_pixels)
        return task

    async def attempt(engine: Engine, request: Request, task, text: bool) -> tuple:
        """Run `task` on `engine` -> its result tuple; server-side failures as error tuples too."""
        try:
            work = engine.batcher.submit(task, timeout=cfg.timeout_ms / 1000.0)
            if text:  # long: stop it when its caller goes away
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
            return ("error", 504, "timeout", f"no result within {cfg.timeout_ms:g} ms")
        except WorkerDied as err:
            return ("error", 503, "worker_died", f"{err}; it is being restarted, retry later")

    def check_ready(engine: Engine) -> None:
        if not engine.ready:
            why = engine.load_error or "model is loading; retry later"
            raise ApiError(503, "not_ready", why if len(st.engines) == 1 else f"variant {engine.name}: {why}",
                           {**retry, "X-R1-Variant": engine.name})

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=inputs.OPENAPI_BODY,
              summary="Predict on one image (multipart `file`, JSON base64 `image`, or a raw image/* body), "
                      "or generate text (language models: JSON `{\"text\": ...}`)")
    async def predict(request: Request):
        t0 = time.perf_counter()
        if not st.ready and not st.stable.ready:
            raise ApiError(503, "not_ready", st.stable.load_error or "model is loading; retry later", retry)
        engine, pinned = route(request)
        check_ready(engine)
        if st.admitting + engine.batcher.depth >= cfg.max_queue:  # refuse before reading or decoding anything
            raise ApiError(503, "overloaded", f"queue full ({cfg.max_queue} waiting); retry later", retry)
        task, family, text = await read_task(engine, request)
        t1 = time.perf_counter()
        result = await attempt(engine, request, task, text)
        status = 200 if result[0] == "ok" else result[1]
        observe(engine, status, "" if result[0] == "ok" else result[2], time.perf_counter() - t1)
        if result[0] != "ok" and may_retry(engine, pinned, *result[1:3]):
            st.metrics.retries.labels(engine.name).inc()
            log.info("variant %s failed a request (%s); answered by %s", engine.name, result[2], st.router.stable)
            engine, t1 = st.stable, time.perf_counter()
            result = await attempt(engine, request, task, text)
            observe(engine, 200 if result[0] == "ok" else result[1], "" if result[0] == "ok" else result[2],
                    time.perf_counter() - t1)
        headers = {"X-R1-Variant": engine.name}
        if result[0] != "ok":
            raise ApiError(*result[1:], {**headers, **(retry if result[1] == 503 else {})})
        # A Response skips FastAPI's re-validation of the body (the schema still documents it in
        # /docs): a measurable share of the per-request CPU at small models.
        return JSONResponse({"model": engine.model_name, "variant": engine.name, "family": family,
                             "runtime": engine.info["runtime"],
                             "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "result": result[1]},
                            headers=headers)

    completions_route(app, st, route, observe, may_retry, check_ready)

    # outermost first: metrics, body limit, then POST /v1/predict past FastAPI's routing
    app.add_middleware(DirectRoute, path="/v1/predict", method="POST", handler=predict, on_error=api_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes, timeout_s=cfg.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=st.metrics)
    return app


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
    from r1.inference.runtimes import RUNTIMES, infer_runtime

    cfg.validate()
    if cfg.runtime not in RUNTIMES:
        raise ConfigError(f"--runtime: {cfg.runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}")
    if cfg.runtime == "tensorrt":
        from r1.inference.tensorrt import require_tensorrt
        require_tensorrt()
    for path in cfg.variant_models().values():
        if infer_runtime(path) == "onnx":
            from r1.onnx.graph import read_onnx_meta
            read_onnx_meta(path)
        else:
            from r1.artifacts import read_info
            from r1.inference.runtimes import check_runtime
            check_runtime(read_info(path)["family"], cfg.runtime)


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
