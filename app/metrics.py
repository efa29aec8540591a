"""Prometheus metrics of one app instance.

Each app gets its own ``CollectorRegistry`` so that several apps in one process (tests) do not
clash. With ``uvicorn --workers N`` every worker counts its own requests; aggregate them in
Prometheus (or set up prometheus-client's multiprocess mode, not done here).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Latency buckets in seconds: the service answers in milliseconds, so resolve that range.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The service's metrics, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "movierec_http_requests_total", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "movierec_http_request_duration_seconds", "HTTP request latency by method and route template.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.model_version = Gauge(
            "movierec_model_version", "Model version being served (0 when none).", registry=self.registry,
        )
        self.candidate_version = Gauge(
            "movierec_candidate_version", "Candidate version serving a share of users (0 when none).",
            registry=self.registry,
        )
        self.candidate_share = Gauge(
            "movierec_candidate_share", "Share of users the candidate version serves (0 when none).",
            registry=self.registry,
        )
        self.reloads = Counter(
            "movierec_model_reloads_total", "Model loads by outcome (success, failure).", ["result"],
            registry=self.registry,
        )
        self.foldins = Counter(
            "movierec_foldins_total", "Users whose factors were solved from their current ratings.",
            registry=self.registry,
        )
        self.impressions_recorded = Counter(
            "movierec_impressions_recorded_total", "Impressions written to the database.", registry=self.registry,
        )
        self.impressions_dropped = Counter(
            "movierec_impressions_dropped_total",
            "Impressions not recorded, by reason (queue_full: the writer fell behind; database: the write failed).",
            ["reason"], registry=self.registry,
        )
        self.impressions_pending = Gauge(
            "movierec_impressions_pending", "Impressions waiting to be written.", registry=self.registry,
        )
        self.impressions_pruned = Counter(
            "movierec_impressions_pruned_total", "Impressions deleted by the retention setting.",
            registry=self.registry,
        )
        self.impressions_writer_cpu = Counter(
            "movierec_impressions_writer_cpu_seconds_total",
            "CPU time spent writing impressions (building the rows, the inserts, the commits): what recording "
            "costs beside the requests.", registry=self.registry,
        )
        # Label lookups cost a lock and a dict access each; cache the children per label tuple.
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and record its latency."""
        key = (method, route, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children.setdefault(key, self.requests.labels(*key))
        counter.inc()
        lkey = (method, route)
        hist = self._latency_children.get(lkey)
        if hist is None:
            hist = self._latency_children.setdefault(lkey, self.latency.labels(*lkey))
        hist.observe(seconds)
