"""The server's state, shared by its routes: the variants' engines, the router, the metrics and
the request-level rules (which variant answers, what counts toward a rollback, when to retry).

`create_app` (r1/serve/app.py) builds one `ServerState` and hands it to each group of routes.
"""
from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor

from r1.config_commands import ServeConfig
from r1.input_kinds.http import ApiError
from r1.serve.engine import Engine
from r1.serve.errors import error_response
from r1.serve.metrics import Metrics
from r1.serve.variants import RollbackRules, Router

log = logging.getLogger(__name__)

RETRY_CODES = ("generation_failed", "inference_failed", "non_finite_output", "worker_died", "internal_error",
               "timeout", "overloaded")  # a full or stuck canary is no reason to turn a client away
# A routed request on a non-stable variant gets this share of serve.timeout_ms, so that a timeout there
# leaves the rest for its retry on the stable one: the client's limit stays serve.timeout_ms.
CANARY_TIMEOUT_SHARE = 0.5
NOT_COUNTED = ("overloaded", "shutting_down", "not_ready", "cancelled")  # the server's state, not the model's


class ServerState:
    def __init__(self, cfg: ServeConfig):
        self.cfg, self.metrics = cfg, Metrics()
        self.engines: dict[str, Engine] = {}  # one per variant, in declaration order
        self.router = Router(cfg.weights(), cfg.stable_name(),
                             RollbackRules(cfg.rollback_window, cfg.rollback_min_requests, cfg.rollback_error_rate,
                                           cfg.rollback_p95_factor, cfg.rollback_p95_floor_ms / 1000.0),
                             horizon_s=cfg.compare_window_s)
        self.next_id = itertools.count(1)  # task ids: a running task can be cancelled by its id
        self.ready = False
        self.admitting = 0  # requests past admission that are not in the batch queue yet (reading, decoding)
        # small uploads are decoded here, in threads: never on the event loop (PIL releases the GIL)
        self.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="r1-decode")
        self.retry_headers = {"Retry-After": str(cfg.retry_after_s)}
        for vname, weight in self.router.weights.items():
            self.metrics.variant_weight.labels(vname).set(weight)
        if len(self.router.names) > 1:
            log.info("traffic: %s", self.router.shares_text())

    @property
    def stable(self) -> Engine:
        return self.engines[self.router.stable]

    # the stable variant's parts (single-model servers: the model's)
    @property
    def worker(self):
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

    # ------------------------------------------------------------------ readiness and queue depth
    def readiness_changed(self) -> None:
        """Ready when the stable variant is, and every other one that gets traffic has loaded (one that
        is restarting sends its requests to the stable one; one that cannot load is rolled back)."""
        stable = self.router.stable
        self.ready = bool(self.engines) and self.engines[stable].ready and all(
            e.ready or e.loaded_once or self.router.weights[n] == 0 for n, e in self.engines.items() if n != stable)
        self.metrics.ready.set(int(self.ready))
        for n, e in self.engines.items():
            self.metrics.variant_ready.labels(n).set(int(e.ready))

    def depth_changed(self) -> None:
        self.metrics.queue_depth.set(sum(e.batcher.depth for e in self.engines.values() if e.batcher is not None))

    def check_ready(self, engine: Engine) -> None:
        if not engine.ready:
            why = engine.load_error or "model is loading; retry later"
            raise ApiError(503, "not_ready", why if len(self.engines) == 1 else f"variant {engine.name}: {why}",
                           {**self.retry_headers, "X-R1-Variant": engine.name})

    # ------------------------------------------------------------------ variants: loading, rollback
    def variant_loaded(self, engine: Engine) -> None:
        """A variant is up: it must take the stable variant's inputs and be of its family (a language
        model beside an image classifier would fail half the requests with 4xx no rollback counts)."""
        stable = self.stable
        if not stable.ready:
            return
        for e in ([engine] if engine is not stable else [e for e in self.engines.values() if e is not stable]):
            if not e.ready:
                continue
            theirs = (e.info.get("family"), e.info.get("inputs"))
            mine = (stable.info.get("family"), stable.info.get("inputs"))
            if theirs != mine:
                e.refuse(f"a {theirs[0]} model ({theirs[1]} inputs), not of the stable variant's family "
                         f"{mine[0]} ({mine[1]} inputs); variants must be models of one family")

    def variant_failed(self, engine: Engine, why: str) -> None:
        """A non-stable variant cannot serve (load failed, restarts given up, refused): rolled back now,
        one log line; /readyz then follows the stable variant."""
        if self.router.roll_back(engine.name, f"cannot serve: {why}"):
            self.metrics.rollbacks.labels(engine.name, "load").inc()
            self.metrics.variant_weight.labels(engine.name).set(0)
            log.warning("rollback: variant %s weight -> 0 (cannot serve: %s); traffic continues on %s", engine.name,
                        str(why).splitlines()[0][:300], ", ".join(n for n, w in self.router.weights.items() if w > 0))
        self.readiness_changed()

    # ------------------------------------------------------------------ variants: routing, rollback, retries
    def route(self, request, model: str | None = None, user: str | None = None) -> tuple[Engine, bool]:
        """-> (the variant for this request, pinned?): `X-R1-Variant` (or a completion's `model`
        naming a variant) pins one; else sticky on `X-R1-User`, else weighted random."""
        pin = request.headers.get("x-r1-variant") or (model if model in self.engines else None)
        if pin:
            if pin not in self.engines:
                raise ApiError(400, "unknown_variant", f"X-R1-Variant: {pin!r} is not a variant; variants: "
                                                       f"{', '.join(self.engines)}")
            return self.engines[pin], True
        name = self.router.pick(request.headers.get("x-r1-user") or user, usable=lambda n: self.engines[n].ready)
        return self.engines[name], False

    def observe(self, engine: Engine, status: int, code: str, seconds: float) -> None:
        """Count one answer of `engine` (metrics, rollback window); roll it back when a rule says so."""
        self.metrics.variant_requests.labels(engine.name, str(status)).inc()
        if code in NOT_COUNTED:
            return
        failed = status >= 500
        if failed:
            self.metrics.variant_errors.labels(engine.name).inc()
        else:
            self.metrics.variant_seconds.labels(engine.name).observe(seconds)
        why = self.router.record(engine.name, not failed, seconds)
        if why:
            rule = "error_rate" if why.startswith("error") else "p95"
            self.metrics.rollbacks.labels(engine.name, rule).inc()
            self.metrics.variant_weight.labels(engine.name).set(0)
            log.warning("rollback: variant %s weight -> 0 (%s); traffic continues on %s", engine.name, why,
                        ", ".join(n for n, w in self.router.weights.items() if w > 0))
            self.readiness_changed()

    def may_retry(self, engine: Engine, pinned: bool, status: int, code: str) -> bool:
        return (self.cfg.retry_on_stable and not pinned and engine.name != self.router.stable and status >= 500
                and code in RETRY_CODES and self.stable.ready)

    def admit(self, engine: Engine, pinned: bool, places: int = 1) -> Engine:
        """The variant that takes a request needing `places` queue places: `engine`, or the stable one
        when a routed non-stable variant is full; 503 (before anything is read or queued) when neither has room."""
        limit = self.cfg.max_queue

        def room(e: Engine) -> bool:
            return self.admitting + e.batcher.depth + e.waiting + places <= limit

        if room(engine):
            return engine
        if not pinned and engine is not self.stable and self.stable.ready and room(self.stable):
            return self.stable
        raise ApiError(503, "overloaded", f"queue full ({engine.batcher.depth} waiting, {places} more asked, at most "
                                          f"{limit}); retry later", {**self.retry_headers, "X-R1-Variant": engine.name})

    def first_timeout(self, engine: Engine, pinned: bool) -> float:
        """Seconds the first attempt on `engine` may take: all of serve.timeout_ms, or a share of it where
        a failure would be retried on the stable variant (which then gets what is left)."""
        total = self.cfg.timeout_ms / 1000.0
        if self.may_retry(engine, pinned, 504, "timeout"):
            return total * CANARY_TIMEOUT_SHARE
        return total

    def api_error(self, err: ApiError):
        """The JSON answer of an ApiError; rejections (413, 503, 504) are counted."""
        if err.status in (503, 504, 413):
            self.metrics.rejected.labels(err.code).inc()
        return error_response(err.status, err.code, err.detail, err.headers)
