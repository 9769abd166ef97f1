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

    def render(self) -> bytes:
        return generate_latest(self.registry)
