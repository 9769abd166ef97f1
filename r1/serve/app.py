"""The R1 HTTP service: `create_app(ServeConfig(...))` -> FastAPI app.

The lifespan starts loading + warming the model (in a worker process by default, or a thread),
so `/healthz` answers at once and `/readyz` says 503 until the model is warm; then a
`DynamicBatcher` serves `/v1/predict`. The event loop parses requests into tasks with the model's
input kind (`r1.input_kinds`), which decodes only tiny images there (`inline_decode_pixels`, read
from the header: a bounded ~0.1 ms); small ones are decoded by decode threads, the rest by the
worker, which also preprocesses, runs the model and post-processes. Admission control counts
requests being read or decoded with the queued ones (`max_queue`), so decode work is bounded too.
Shutdown (uvicorn stops accepting, waits for open requests, then the lifespan exits) drains the
batcher, then stops the worker. Every error is a JSON `ErrorResponse`; bad input is a 4xx, never a 500.

Routes live beside this file, each group over the one `ServerState` (r1/serve/state.py):
health.py (/healthz /readyz /metrics), admin.py (/v1/variants), predict.py (/v1/predict),
completions.py (/v1/completions), docs.py (/docs), v2.py (the Open Inference Protocol, /v2/...).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from r1.config_commands import ServeConfig, model_name
from r1.family import get_family, list_families
from r1.input_kinds.http import ApiError, summarize_errors
from r1.serve.admin import admin_router
from r1.serve.completions import completions_route
from r1.serve.docs import mount_docs
from r1.serve.engine import Engine
from r1.serve.errors import BodyLimitMiddleware, DirectRoute, MetricsMiddleware, error_response
from r1.serve.health import health_router
from r1.serve.predict import register_predict
from r1.serve.resources import ResourceCollector, processes
from r1.serve.schemas import predict_response
from r1.serve.state import ServerState
from r1.serve.v2 import v2_router
from r1.serve.web import mount_web

log = logging.getLogger(__name__)


def _default_loader(cfg: ServeConfig):
    from r1.inference import load

    return load(cfg.model, runtime=cfg.runtime, threads=cfg.threads)


def _add_engines(st: ServerState, loader: Callable) -> None:
    for vname, path in st.cfg.variant_models().items():
        engine = Engine(vname, dataclasses.replace(st.cfg, model=path, variants={}, traffic={}), loader, st.metrics,
                        st.readiness_changed, st.depth_changed, st.variant_loaded, st.variant_failed)
        engine.model_name = model_name(path)  # what responses say: never the server's file paths
        st.engines[vname] = engine


def _lifespan(st: ServerState):
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
    return lifespan


def _error_handlers(app: FastAPI, st: ServerState) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return st.api_error(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "bad_request")
        return error_response(err.status_code, code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        return error_response(422, "invalid_request", summarize_errors(err.errors()))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception):
        log.error("internal error on %s: %r", request.url.path, err)
        return error_response(500, "internal_error", f"{type(err).__name__} (see the server log)")


def _record_schemas() -> dict[str, type]:
    """family -> the pydantic model of its prediction record, for /docs."""
    return {name: get_family(name).hook("schema") for name in list_families() if get_family(name).schema is not None}


def create_app(cfg: ServeConfig, loader: Callable[[ServeConfig], object] | None = None) -> FastAPI:
    """`loader(cfg) -> Predictor` (default: `r1.inference.load`); tests inject slow or fake ones. With
    several variants the loader is called once per variant, with `cfg.model` set to its model.
    With `cfg.inference == "process"` the loader runs in the worker process: it must be picklable."""
    cfg.validate()
    st = ServerState(cfg)
    st.metrics.registry.register(ResourceCollector(lambda: processes(st)))  # memory series (r1/serve/resources.py)
    _add_engines(st, loader or _default_loader)
    app = FastAPI(title="R1 model server", version="1", lifespan=_lifespan(st), docs_url=None, redoc_url=None,
                  description="Dynamic-batching inference for R1 models (`r1 serve`), with A/B and canary "
                              "variants and OpenAI-style `/v1/completions` for language models.")
    app.state.r1 = st
    mount_docs(app)
    _error_handlers(app, st)
    app.include_router(health_router(st))
    app.include_router(admin_router(st, cfg.admin_token or os.environ.get("R1_ADMIN_TOKEN", "")))
    predict = register_predict(app, st, predict_response(_record_schemas()))
    completions_route(app, st)
    app.include_router(v2_router(st))  # the Open Inference Protocol (r1/serve/v2.py)
    mount_web(app)  # the page at / (r1/serve/web.py)
    # outermost first: metrics, body limit, then POST /v1/predict past FastAPI's routing
    app.add_middleware(DirectRoute, path="/v1/predict", method="POST", handler=predict, on_error=st.api_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes, timeout_s=cfg.body_timeout_s,
                       max_header_bytes=cfg.max_header_bytes)
    app.add_middleware(MetricsMiddleware, metrics=st.metrics)
    return app
