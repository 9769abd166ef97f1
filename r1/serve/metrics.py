"""Prometheus metrics of one server. Each app owns its registry (several apps can share a process)."""
from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the route)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("r1_requests_total", "HTTP requests by route and status code.",
                                ["route", "status"], registry=r)
        self.request_seconds = Histogram("r1_request_duration_seconds", "HTTP request duration by route.",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("r1_queue_wait_seconds", "Time a request waited in the batch queue.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("r1_batch_inference_seconds", "Time to run one batch (pre-stacked).",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("r1_batch_size", "Requests per executed batch.", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.queue_depth = Gauge("r1_queue_depth", "Requests waiting in the batch queue.", registry=r)
        self.rejected = Counter("r1_rejected_total", "Requests refused without running, by reason.",
                                ["reason"], registry=r)
        self.model_load_seconds = Gauge("r1_model_load_seconds", "Seconds to load and warm the model.",
                                        registry=r)
        self.ready = Gauge("r1_ready", "1 once the model is loaded and warm.", registry=r)
        self.worker_restarts = Counter("r1_worker_restarts_total", "Restarts of a dead or stuck inference process.",
                                       registry=r)
        self.cancelled = Counter("r1_cancelled_total", "Running tasks stopped because their caller timed out "
                                 "(504) or disconnected.", registry=r)

        # per variant (A/B, canary): the same series with a `variant` label
        self.variant_requests = Counter("r1_variant_requests_total", "Answered /v1/predict and /v1/completions "
                                        "requests by variant and status code.", ["variant", "status"], registry=r)
        self.variant_errors = Counter("r1_variant_errors_total", "Requests a variant failed (5xx from its model).",
                                      ["variant"], registry=r)
        self.variant_seconds = Histogram("r1_variant_request_duration_seconds", "Time a variant took per request "
                                         "(queue + inference).", ["variant"], buckets=LATENCY_BUCKETS, registry=r)
        self.variant_batch_size = Histogram("r1_variant_batch_size", "Requests per executed batch, by variant.",
                                            ["variant"], buckets=BATCH_BUCKETS, registry=r)
        self.variant_weight = Gauge("r1_variant_weight", "Routing weight of each variant (0: rolled back or off).",
                                    ["variant"], registry=r)
        self.variant_ready = Gauge("r1_variant_ready", "1 once the variant's model is loaded and warm.",
                                   ["variant"], registry=r)
        self.rollbacks = Counter("r1_variant_rollbacks_total", "Automatic rollbacks (weight set to 0), by variant "
                                 "and rule.", ["variant", "rule"], registry=r)
        self.retries = Counter("r1_variant_retries_total", "Requests that failed on a variant and were answered "
                               "by the stable one instead.", ["variant"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
