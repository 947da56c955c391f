"""The service's Prometheus metrics (one registry per app, so tests can build many).

- ``recsys_requests_total{route, method, status}``: requests answered, by route
  template (``/recommendations/{user_id}``: never a raw path, so no id);
- ``recsys_request_duration_seconds{route}``: latency histogram;
- ``recsys_recommendations_served_total{served_by, variant}``: lists served, by
  who answered (``batch``, ``model``, a cold-start path, ``similarity``) and alias;
- ``recsys_fallbacks_total{reason}``: answers that are not the batch list or the
  model's answer for a known user: ``cold_start:<path>`` (a user the model does
  not know), ``no_fold_in`` (recent items the model cannot score),
  ``cache_error`` (Redis failed; the model answered);
- ``recsys_cache_lookups_total{result}``: ``hit``, ``miss``, ``short`` (the
  filtered list was shorter than ``k``), ``error``;
- ``recsys_model_version{alias}``: the version answering (0 = none);
- ``recsys_model_reloads_total{alias}``: swaps to another version;
- ``recsys_scoring_batch_size``: requests scored together in one model call.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The ``*_created`` timestamp series double the text and say nothing a rate() needs.
disable_created_metrics()

#: Latency buckets (seconds): fine below 50 ms, where the goals are.
BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Batch-size buckets (requests per model call).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
COLD_START_PATHS = ("onboarding", "global")


class Metrics:
    """The counters and histograms of one service instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._versions: dict[str, int | None] = {}
        r = self.registry
        self._requests = Counter(
            "recsys_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self._latency = Histogram(
            "recsys_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=BUCKETS,
            registry=r,
        )
        self._served = Counter(
            "recsys_recommendations_served",
            "Lists served, by who answered and which alias",
            ["served_by", "variant"],
            registry=r,
        )
        self._fallbacks = Counter(
            "recsys_fallbacks", "Answers served by a fallback, by reason", ["reason"], registry=r
        )
        self._cache = Counter(
            "recsys_cache_lookups", "Batch cache lookups, by result", ["result"], registry=r
        )
        self._version = Gauge(
            "recsys_model_version", "Registered version answering (0 = none)", ["alias"], registry=r
        )
        self._reloads = Counter(
            "recsys_model_reloads", "Swaps to another version", ["alias"], registry=r
        )
        self._batch = Histogram(
            "recsys_scoring_batch_size",
            "Requests scored together in one model call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.labels(route, method, str(status)).inc()
        self._latency.labels(route).observe(seconds)

    def served(self, served_by: str, variant: str, fallback: str | None) -> None:
        self._served.labels(served_by, variant).inc()
        if served_by in COLD_START_PATHS or served_by.startswith("segment:"):
            self.fallback(f"cold_start:{served_by}")
        if fallback:
            self.fallback(fallback)

    def batch(self, size: int) -> None:
        self._batch.observe(size)

    def fallback(self, reason: str) -> None:
        self._fallbacks.labels(reason).inc()

    def cache(self, result: str) -> None:
        self._cache.labels(result).inc()

    def version_changed(self, alias: str, version: int | None) -> None:
        previous = self._versions.get(alias)
        self._versions[alias] = version
        self._version.labels(alias).set(version or 0)
        if version and previous and previous != version:
            self._reloads.labels(alias).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
