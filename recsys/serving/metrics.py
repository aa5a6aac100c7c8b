"""Request counters and latency histograms in the Prometheus text format (``GET /metrics``)."""

from __future__ import annotations

import bisect
import threading
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request counters and latency histograms, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}  # (route, method, status) -> n
        self.latency: dict[str, list[float]] = {}  # route -> [count per bucket..., +Inf, sum]
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (route, method, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            hist = self.latency.setdefault(route, [0.0] * (len(LATENCY_BUCKETS) + 2))
            hist[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # its own bucket; cumulated
            hist[-1] += seconds

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def render(
        self, counters: dict[str, tuple[str, float]], gauges: dict[str, tuple[str, float]]
    ) -> str:
        """The exposition text, plus ``counters`` and ``gauges`` kept elsewhere: each maps
        ``name{labels}`` to (help, value)."""
        out = ["# HELP recsys_http_requests_total HTTP requests by route, method and status."]
        out.append("# TYPE recsys_http_requests_total counter")
        with self._lock:
            for (route, method, status), n in sorted(self.requests.items()):
                labels = f'route="{escape_label(route)}",method="{method}",status="{status}"'
                out.append(f"recsys_http_requests_total{{{labels}}} {n}")
            errors = sum(n for (_, _, status), n in self.requests.items() if status >= 500)
            name = "recsys_http_request_duration_seconds"
            out += [f"# HELP {name} Request latency by route.", f"# TYPE {name} histogram"]
            for route, hist in sorted(self.latency.items()):
                cumulated = 0.0
                for le, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], hist[:-1], strict=True):
                    cumulated += n
                    out.append(
                        f'{name}_bucket{{route="{escape_label(route)}",le="{le}"}} {cumulated:g}'
                    )
                out.append(f'{name}_sum{{route="{escape_label(route)}"}} {hist[-1]:.6f}')
                out.append(f'{name}_count{{route="{escape_label(route)}"}} {cumulated:g}')
            own = {name: (HELP.get(name, name), n) for name, n in self.counters.items()}
        own["recsys_http_errors_total"] = ("Responses with a 5xx status.", errors)
        for kind, series in (("counter", {**own, **counters}), ("gauge", gauges)):
            for key, (help_, value) in sorted(series.items()):
                bare = key.split("{")[0]
                out += [f"# HELP {bare} {help_}", f"# TYPE {bare} {kind}", f"{key} {value:g}"]
        return "\n".join(out) + "\n"


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


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(metrics: Metrics, holder: Any, impressions: Any, popularity: Any) -> str:
    """The whole ``/metrics`` text: the request metrics plus the model's, the impression log's
    and the trending list's counters and gauges."""
    loaded = holder.current
    counters = {
        "recsys_model_reloads_total": ("Champion versions loaded.", holder.reloads),
        "recsys_model_reload_errors_total": ("Failed polls or loads.", holder.reload_errors),
        "recsys_impressions_written_total": ("Impressions written.", impressions.written),
        "recsys_impressions_failed_total": ("Impressions not written.", impressions.failed),
    }
    gauges = {
        "recsys_model_loaded": ("1 when a model is loaded.", float(loaded is not None)),
        "recsys_trending_items": ("Items in the trending list.", len(popularity.current.items)),
    }
    if loaded:
        labels = f'{{version="{escape_label(loaded.version)}"}}'
        gauges[f"recsys_model_info{labels}"] = ("The served model version.", 1.0)
        states = loaded.recommender.states
        counters[f"recsys_state_cache_hits_total{labels}"] = (
            "Answers whose history's state was cached (no forward pass).",
            states.hits,
        )
        counters[f"recsys_state_cache_misses_total{labels}"] = (
            "Answers that ran the forward pass.",
            states.misses,
        )
        gauges[f"recsys_state_cache_entries{labels}"] = ("Histories cached.", len(states))
    return metrics.render(counters, gauges)
