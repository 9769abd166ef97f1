"""GET /v1/variants (weights, shares, errors, p95, rollbacks) and POST /v1/variants (change weights
at run time, with the admin token)."""
from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from r1.config_commands import MAX_WEIGHT
from r1.input_kinds.http import ApiError, parse_json

log = logging.getLogger(__name__)


def variants_body(st, seconds: float | None = None) -> dict:
    rows = st.router.describe(seconds)
    for row in rows:
        e = st.engines[row["name"]]
        row.update(model=e.model_name, ready=e.ready, family=e.info.get("family"))
    return {"stable": st.router.stable, "variants": rows}


def _check_token(request: Request, admin_token: str) -> None:
    if not admin_token:
        raise ApiError(404, "not_found", "POST /v1/variants is off: start the server with --admin-token "
                                         "(or R1_ADMIN_TOKEN) to change weights at run time")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <admin token>", {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), admin_token.encode()):
        raise ApiError(403, "forbidden", "wrong admin token")


def admin_router(st, admin_token: str) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/variants", summary="Variants: weights, share, requests, errors, error rate and p95 over the "
                "rollback window and over the last `window_s` seconds (default serve.compare_window_s), each "
                "compared with the stable variant; rollback reason")
    async def get_variants(window_s: float | None = Query(None, gt=0, description="Seconds of the time window.")):
        return JSONResponse(variants_body(st, window_s))

    @router.post("/v1/variants", summary="Change routing weights at run time: `{\"weights\": {\"canary\": 10}}` "
                 "with `Authorization: Bearer <admin token>` (the route exists only with --admin-token)")
    async def post_variants(request: Request):
        _check_token(request, admin_token)
        body = parse_json(await request.body(), "{\"weights\": {\"NAME\": WEIGHT, ...}}", code="bad_json")
        weights = body.get("weights") if isinstance(body, dict) else None
        if not isinstance(weights, dict) or not weights or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights.values()):
            raise ApiError(422, "invalid_request", f"weights: expected {{\"NAME\": number >= 0 and <= {MAX_WEIGHT:g}, ...}}")
        try:
            st.router.set_weights(weights)
        except ValueError as err:
            raise ApiError(422, "invalid_request", f"weights: {err}") from None
        for n, w in st.router.weights.items():
            st.metrics.variant_weight.labels(n).set(w)
        st.readiness_changed()
        log.info("weights changed: %s", ", ".join(f"{n}={w:g}" for n, w in st.router.weights.items()))
        return JSONResponse(variants_body(st))

    return router
