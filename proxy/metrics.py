"""Every metric, defined on a registry passed in (tests get a fresh one).

Names follow Prometheus conventions: a unit in the name (``_seconds``, ``_bytes``), ``_total``
on counters (added by the client library). Labels are bounded enums only: never a key, URL, IP or
user agent, so the number of series does not grow with traffic.

With ``serve --workers N`` the processes share their values through prometheus-client's
multiprocess mode, and any process answers a scrape with the sum over all of them; gauges say how
they combine (``livesum``: summed over live processes, ``max``: the largest).
"""

from __future__ import annotations

import bisect

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("queue", "origin", "transform")
LAYERS = ("renders", "originals", "negative", "result_storage")


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # The ``*_created`` series double the count and no dashboard here uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry
        ns = "originshield"
        r = registry
        self.requests = Counter(
            f"{ns}_requests", "HTTP requests answered, by route and status class.",
            ["route", "status_class"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            f"{ns}_request_duration_seconds", "Time to answer a request.", ["route"],
            buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            f"{ns}_stage_duration_seconds",
            "Time spent per stage of a render: waiting for a worker, origin fetch, transform.",
            ["stage"], buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.cache_lookups = Counter(
            f"{ns}_cache_lookups", "Cache lookups by layer and result (hit, miss, stale).",
            ["layer", "result"], registry=r,
        )  # fmt: skip
        self.cache_bytes = Gauge(
            f"{ns}_cache_bytes", "Bytes held per cache layer.", ["layer"], registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.cache_entries = Gauge(
            f"{ns}_cache_entries", "Entries held per cache layer.", ["layer"], registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.coalesced = Counter(
            f"{ns}_coalesced_requests",
            "Requests that waited for an identical in-flight render or origin fetch.",
            ["stage"], registry=r,
        )  # fmt: skip
        self.origin_requests = Counter(
            f"{ns}_origin_requests",
            "Requests to the origin by outcome (ok, not_modified, not_found, error).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.origin_retries = Counter(
            f"{ns}_origin_retries", "Origin calls retried after a busy or failed answer.",
            ["action"], registry=r,
        )  # fmt: skip
        self.origin_bytes = Counter(
            f"{ns}_origin_read_bytes", "Bytes of originals read from the origin.", registry=r
        )
        self.served_bytes = Counter(f"{ns}_served_bytes", "Body bytes sent to clients.", registry=r)
        self.transforms = Counter(
            f"{ns}_transforms", "Transforms completed, by output format.", ["format"], registry=r
        )
        self.transforms_in_flight = Gauge(
            f"{ns}_transforms_in_flight", "Transforms running now.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.queue_depth = Gauge(
            f"{ns}_transform_queue_depth", "Requests waiting for a transform slot.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.rejections = Counter(
            f"{ns}_rejections",
            "Requests refused, by reason (signature, params, limits, overload, origin_lock).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            f"{ns}_errors", "Error responses by category.", ["category"], registry=r
        )
        self.result_storage_writes = Counter(
            f"{ns}_result_storage_writes", "Renders written to result storage, by outcome.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.libvips_memory = Gauge(
            f"{ns}_libvips_memory_bytes", "Memory libvips holds for pixel buffers.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.build = Gauge(
            f"{ns}_build_info", "Versions of originshield and libvips (value 1).",
            ["version", "libvips"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self._tally: dict[tuple[str, int], _Tally] = {}
        # Children by label values: ``labels()`` validates and locks on every call.
        self._lookups: dict[tuple[str, str], Counter] = {}
        self._stages: dict[str, Histogram] = {}
        self._bounds = [*SECONDS, float("inf")]
        self._served = 0
        self._hits = 0
        # Every label set exists from the start, so rates and alerts see zeros, not gaps.
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for layer in LAYERS:
            for result in ("hit", "miss"):
                self.cache_lookups.labels(layer, result)
        for outcome in ("ok", "not_modified", "not_found", "error"):
            self.origin_requests.labels(outcome)
        for reason in ("signature", "params", "limits", "overload", "origin_lock"):
            self.rejections.labels(reason)
        for cls in ("2xx", "3xx", "4xx", "5xx"):
            self.requests.labels("image", cls)
        for stage in ("render", "origin"):
            self.coalesced.labels(stage)
        for fmt in ("jpeg", "png", "webp", "avif", "gif"):
            self.transforms.labels(fmt)

    def count_request(self, route: str, status: int, seconds: float, body_bytes: int) -> None:
        """Called for every request, on the event loop: plain integers, no locks.

        prometheus-client takes a lock per increment, which costs a cache hit about a tenth of
        its throughput; the tally is folded into the real metrics by ``flush`` before every
        scrape (and every few seconds with several processes).
        """
        key = (route, status // 100)
        entry = self._tally.get(key)
        if entry is None:
            entry = self._tally[key] = _Tally(len(self._bounds))
        entry.count += 1
        entry.buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        entry.total += seconds
        self._served += body_bytes

    def lookup(self, layer: str, result: str) -> None:
        """Count one cache lookup."""
        child = self._lookups.get((layer, result))
        if child is None:
            child = self._lookups[layer, result] = self.cache_lookups.labels(layer, result)
        child.inc()

    def stage(self, stage: str, seconds: float) -> None:
        """Observe how long one stage of a render took (any thread)."""
        child = self._stages.get(stage)
        if child is None:
            child = self._stages[stage] = self.stage_seconds.labels(stage)
        child.observe(seconds)

    def tally_hit(self) -> None:
        """A render cache hit, counted like ``count_request`` (lock-free, flushed later)."""
        self._hits += 1

    def flush(self) -> None:
        if self._hits:
            self.cache_lookups.labels("renders", "hit").inc(self._hits)
            self._hits = 0
        for (route, cls), entry in self._tally.items():
            if not entry.count:
                continue
            self.requests.labels(route, f"{cls}xx").inc(entry.count)
            _add_to_histogram(self.request_seconds.labels(route), entry.buckets, entry.total)
            entry.reset()
        if self._served:
            self.served_bytes.inc(self._served)
            self._served = 0


class _Tally:
    __slots__ = ("buckets", "count", "total")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * size

    def reset(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * len(self.buckets)


def _add_to_histogram(child: Histogram, buckets: list[int], total: float) -> None:
    """Add pre-bucketed observations: what ``observe`` does, n at a time."""
    values = getattr(child, "_buckets", None)
    sum_value = getattr(child, "_sum", None)
    if values is None or sum_value is None or len(values) != len(buckets):
        # Another prometheus-client layout: one observation per sample, at its bucket's bound.
        for bound, n in zip([*SECONDS, SECONDS[-1]], buckets, strict=True):
            for _ in range(n):
                child.observe(bound)
        return
    for value, n in zip(values, buckets, strict=True):
        if n:
            value.inc(n)
    sum_value.inc(total)
