"""GET /healthz, /readyz and /metrics."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from r1.serve.engine import redact_paths
from r1.serve.metrics import CONTENT_TYPE_LATEST
from r1.serve.schemas import Health, Ready


def health_router(st) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", response_model=Health, summary="Process is alive (503: its inference process died "
                "and could not be restarted)", responses={503: {"model": Health}}, response_model_exclude_none=True)
    async def healthz():
        failed = st.supervisor.failed if st.supervisor is not None else None
        if failed:
            return JSONResponse(Health(status="failing", detail=redact_paths(failed)).model_dump(), status_code=503)
        return Health()

    @router.get("/readyz", response_model=Ready, summary="Model loaded and warm (503 until then)",
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
                     family=stable.info.get("family"), inputs=stable.info.get("inputs"),
                     load_seconds=stable.load_seconds, detail=detail,
                     variants={n: e.ready for n, e in st.engines.items()})
        return JSONResponse(body.model_dump(exclude_none=False), status_code=200 if st.ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
