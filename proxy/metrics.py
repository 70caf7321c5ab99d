"""Every metric, defined on a registry passed in (tests get a fresh one).

Labels are bounded enums only: never a key, URL, IP or user agent.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ns = "originshield"
        self.requests = Counter(
            f"{ns}_requests", "HTTP requests answered.", ["route", "status_class"],
            registry=registry,
        )  # fmt: skip
        self.request_seconds = Histogram(
            f"{ns}_request_duration_seconds", "Time to answer a request.", ["route"],
            buckets=_SECONDS, registry=registry,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            f"{ns}_stage_duration_seconds", "Time spent per stage of a render.", ["stage"],
            buckets=_SECONDS, registry=registry,
        )  # fmt: skip
        self.cache_lookups = Counter(
            f"{ns}_cache_lookups", "Cache lookups by layer and result.", ["layer", "result"],
            registry=registry,
        )  # fmt: skip
        self.cache_bytes = Gauge(
            f"{ns}_cache_bytes", "Bytes held per cache layer.", ["layer"], registry=registry
        )
        self.cache_entries = Gauge(
            f"{ns}_cache_entries", "Entries held per cache layer.", ["layer"], registry=registry
        )
        self.coalesced = Counter(
            f"{ns}_coalesced_requests", "Requests that waited on an identical in-flight one.",
            ["stage"], registry=registry,
        )  # fmt: skip
        self.origin_requests = Counter(
            f"{ns}_origin_requests", "Requests to the origin by outcome.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.origin_bytes = Counter(
            f"{ns}_origin_read_bytes", "Bytes read from the origin.", registry=registry
        )
        self.served_bytes = Counter(
            f"{ns}_served_bytes", "Body bytes sent to clients.", registry=registry
        )
        self.transforms = Counter(
            f"{ns}_transforms", "Transforms by output format.", ["format"], registry=registry
        )
        self.transforms_in_flight = Gauge(
            f"{ns}_transforms_in_flight", "Transforms running now.", registry=registry
        )
        self.queue_depth = Gauge(
            f"{ns}_transform_queue_depth", "Transforms waiting for a slot.", registry=registry
        )
        self.rejections = Counter(
            f"{ns}_rejections", "Requests refused, by reason.", ["reason"], registry=registry
        )
        self.errors = Counter(
            f"{ns}_errors", "Error responses by category.", ["category"], registry=registry
        )
        self.result_storage_writes = Counter(
            f"{ns}_result_storage_writes", "Renders written to result storage, by outcome.",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.origin_retries = Counter(
            f"{ns}_origin_retries", "Origin calls retried after a busy or failed answer.",
            ["action"], registry=registry,
        )  # fmt: skip
        self.build = Info(f"{ns}_build", "Version of originshield and libvips.", registry=registry)
