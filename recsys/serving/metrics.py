"""``GET /metrics``: request counters and latency histograms, the served model's state, and the
process's own (CPU, memory, open files, GC), through ``prometheus_client``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# The `_created` series double every counter's lines and say nothing a scraper lacks.
disable_created_metrics()

HELP = {
    "recsys_cold_start_total": "Lists served from the trending list (user unknown to the model).",
    "recsys_model_lists_total": "Lists ranked by the model.",
    "recsys_explored_items_total": "Items without a model row blended into lists.",
    "recsys_impressions_dropped_total": "Impressions dropped because the write queue was full.",
    "recsys_events_stored_total": "Events stored by POST /events.",
    "recsys_events_duplicate_total": "Events posted again with a known event id.",
    "recsys_rate_limited_total": "Requests refused by a key's rate limit (429).",
    "recsys_overloaded_total": "Requests refused because too many were in flight (429).",
    "recsys_feedback_refused_total": "Feedback naming a forged, foreign, stale or answered list.",
}


class Metrics:
    """One app's metrics, in a registry of its own (several apps may share a process: tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self._requests = Counter(
            "recsys_http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "recsys_http_request_duration_seconds",
            "Request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "recsys_http_errors_total", "Responses with a 5xx status.", registry=self.registry
        )
        self._counters = {
            name: Counter(name, text, registry=self.registry) for name, text in HELP.items()
        }

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.labels(route, method, str(status)).inc()
        self._latency.labels(route).observe(seconds)
        if status >= 500:
            self._errors.inc()

    def inc(self, name: str, n: int = 1) -> None:
        self._counters[name].inc(n)  # KeyError: a counter HELP does not describe

    def watch(self, holder: Any, impressions: Any, popularity: Any) -> None:
        """Also expose the served model's, the impression log's and the trending list's state,
        read at each scrape."""
        self.registry.register(_ServingState(holder, impressions, popularity))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ServingState:
    """Values kept by other objects, collected when Prometheus scrapes."""

    def __init__(self, holder: Any, impressions: Any, popularity: Any) -> None:
        self.holder, self.impressions, self.popularity = holder, impressions, popularity

    def collect(self) -> Iterator[Metric]:
        holder, loaded = self.holder, self.holder.current
        for name, text, value in (
            ("recsys_model_reloads", "Champion versions loaded.", holder.reloads),
            ("recsys_model_reload_errors", "Failed polls or loads.", holder.reload_errors),
            ("recsys_impressions_written", "Impressions written.", self.impressions.written),
            ("recsys_impressions_failed", "Impressions not written.", self.impressions.failed),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily(
            "recsys_model_loaded", "1 when a model is loaded.", value=float(loaded is not None)
        )
        yield GaugeMetricFamily(
            "recsys_trending_items",
            "Items in the trending list.",
            value=len(self.popularity.current.items),
        )
        if loaded is None:
            return
        version = [loaded.version]
        info = GaugeMetricFamily(
            "recsys_model_info", "The served model version.", labels=["version"]
        )
        info.add_metric(version, 1.0)
        states = loaded.recommender.states
        hits = CounterMetricFamily(
            "recsys_state_cache_hits",
            "Answers whose history's state was cached (no forward pass).",
            labels=["version"],
        )
        hits.add_metric(version, states.hits)
        misses = CounterMetricFamily(
            "recsys_state_cache_misses", "Answers that ran the forward pass.", labels=["version"]
        )
        misses.add_metric(version, states.misses)
        entries = GaugeMetricFamily(
            "recsys_state_cache_entries", "Histories cached.", labels=["version"]
        )
        entries.add_metric(version, len(states))
        yield from (info, hits, misses, entries)
