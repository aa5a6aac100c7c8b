"""The serving API: recommendations from ``models:/recsys@champion``, events into the event store.

A user's history is the event store's plus the events just posted to this process (the
recent-events cache), so an event posted a moment ago already shapes the next answer, without
retraining. Unknown users get the trending list (``cold_start: true``); items the model has no row
for are blended into every list at the configured exploration share, seeded by the request id.
Every answer carries a request id and the model version, and is logged as an impression, which
clicks posted with that request id are joined with (``recsys.data.impressions``).

A background thread polls the registry and swaps in a new champion atomically: a request uses the
model it started with; a registry outage or a version that fails to load keeps the last good
model, and ``/health`` says why. ``/ready``: a model is loaded; ``/metrics``: Prometheus text.

Annotations are evaluated here (no ``from __future__ import annotations``): FastAPI reads the
request models that ``create_app`` builds from the serving config.
"""

import bisect
import datetime as dt
import gc
import logging
import math
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from recsys import schema as S
from recsys.config import CHAMPION, ServingConfig, Settings
from recsys.data.events import REQUEST_ID, EventStore, prepare_rows
from recsys.data.impressions import Impression, ImpressionLog
from recsys.model.recommender import EXPLORE, MODEL, Ranked, Recommender, blend, request_seed
from recsys.serving.feedback import Popularity, RecentEvents, merge_history

log = logging.getLogger(__name__)

MAX_K = ServingConfig.max_k  # kept for callers of the old constant
REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
MAX_FUTURE = dt.timedelta(hours=1)  # an event time further ahead is a client bug: 422
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


@dataclass
class Loaded:
    version: str
    recommender: Recommender


class ChampionHolder:
    """Holds the live model; ``refresh()`` loads a new champion and swaps it in one assignment."""

    def __init__(self, settings: Settings, state_cache: int = 0) -> None:
        self.settings = settings
        self.state_cache = state_cache  # ``Recommender.state_cache`` of each loaded version
        self.current: Loaded | None = None
        self.last_error: str | None = None
        self.last_error_at: dt.datetime | None = None
        self.reloads = 0
        self.reload_errors = 0
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Load the champion if it changed. Returns True when a new version was swapped in."""
        from recsys.registry.client import Registry

        with self._lock:
            try:
                reg = Registry(self.settings)
                champion = reg.alias(CHAMPION)  # raises when the registry cannot answer
                if champion is None or (
                    self.current and self.current.version == str(champion.version)
                ):
                    self.last_error = None  # the registry answered
                    return False
                with tempfile.TemporaryDirectory() as tmp:
                    recommender = Recommender.load(
                        reg.version_checkpoint(champion.version, Path(tmp)), self.state_cache
                    )
                recommender.recommend(recommender.item_ids[:1], k=1)  # warm up before the swap
            except Exception as err:  # keep serving the last good model, and say why in /health
                self.last_error = f"{type(err).__name__}: {err}"
                self.last_error_at = dt.datetime.now(dt.UTC)
                self.reload_errors += 1
                log.exception("could not load the champion; keeping the current model")
                return False
            self.current = Loaded(str(champion.version), recommender)  # atomic swap
            self.reloads += 1
            self.last_error = None
            log.info("serving %s version %s", self.settings.registered_model, champion.version)
            return True


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
                labels = f'route="{_esc(route)}",method="{method}",status="{status}"'
                out.append(f"recsys_http_requests_total{{{labels}}} {n}")
            errors = sum(n for (_, _, status), n in self.requests.items() if status >= 500)
            name = "recsys_http_request_duration_seconds"
            out += [f"# HELP {name} Request latency by route.", f"# TYPE {name} histogram"]
            for route, hist in sorted(self.latency.items()):
                cumulated = 0.0
                for le, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], hist[:-1], strict=True):
                    cumulated += n
                    out.append(f'{name}_bucket{{route="{_esc(route)}",le="{le}"}} {cumulated:g}')
                out.append(f'{name}_sum{{route="{_esc(route)}"}} {hist[-1]:.6f}')
                out.append(f'{name}_count{{route="{_esc(route)}"}} {cumulated:g}')
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
}


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as text: JSON has no such numbers, and a 422 that echoes
    ``{"value": NaN}`` back must not become a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class EdgeMiddleware:
    """Gives each request an id (``X-Request-ID``), refuses bodies over ``max_body`` bytes with
    413, adds ``X-Model-Version``, and times every request into ``metrics``."""

    def __init__(self, app: Any, metrics: Metrics, holder: ChampionHolder, max_body: int) -> None:
        self.app, self.metrics, self.holder, self.max_body = app, metrics, holder, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        request_id = scope["recsys.request_id"] = uuid.uuid4().hex
        received = 0

        async def receive_limited() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, f"request body over {self.max_body} bytes")
            return message

        async def send_with_ids(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                loaded = self.holder.current
                version = scope.get("recsys.model_version") or (loaded and loaded.version)
                if version:
                    headers[MODEL_VERSION_HEADER] = version
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > self.max_body:
                detail = f"request body over {self.max_body} bytes or a bad Content-Length"
                await JSONResponse({"detail": detail}, 413)(scope, receive, send_with_ids)
                return
            await self.app(scope, receive_limited, send_with_ids)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # templates, not raw paths
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - start)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    user_id: Id
    item_id: Id
    event_type: Literal[S.EVENT_TYPES] = "view"  # type: ignore[valid-type]
    event_time: dt.datetime | None = None  # naive means UTC; default: now
    event_id: Id | None = None  # idempotency key; default: a fresh id
    value: float | None = None
    request_id: RequestId | None = None  # the served list this event answers (clicks)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.event_type == "rating" and self.value is None:
            raise ValueError("a rating needs a value")
        if self.event_time is not None:
            when = self.event_time
            when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
            if when > dt.datetime.now(dt.UTC) + MAX_FUTURE:
                raise ValueError(f"event_time is more than {MAX_FUTURE} in the future")
        return self


class RecommendationOut(BaseModel):
    item_id: str
    score: float | None  # model score, event count (popular) or None (explored)
    source: Literal["model", "popular", "explore"]


class RecommendationsOut(BaseModel):
    request_id: str
    user_id: str | None
    model_version: str
    cold_start: bool  # True: the user is unknown to the model, these are the trending items
    items: list[RecommendationOut]


def create_app(
    settings: Settings, poll_seconds: float = 10.0, serving: ServingConfig | None = None
) -> FastAPI:
    """The API. The registry is polled every ``poll_seconds`` (0 disables the poller)."""
    cfg = serving or ServingConfig()
    store = EventStore(settings.event_store_url)
    holder = ChampionHolder(settings, cfg.state_cache)
    recent = RecentEvents(cfg.cache_users, cfg.cache_events, cfg.cache_ttl_s)
    popularity = Popularity(store, cfg)
    impressions = ImpressionLog(store.engine, cfg.impression_queue)
    metrics = Metrics()
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(poll_seconds):
            holder.refresh()
            popularity.refresh_if_stale()

    async def lifespan(app: FastAPI):  # noqa: ANN202
        holder.refresh()
        popularity.refresh()
        impressions.start()
        if poll_seconds > 0:
            threading.Thread(target=poll, name="champion-poller", daemon=True).start()
        yield
        stop.set()
        impressions.close()

    app = FastAPI(title="recsys", version="0.2.0", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(EdgeMiddleware, metrics=metrics, holder=holder, max_body=cfg.max_body_bytes)
    app.state.holder, app.state.store, app.state.serving = holder, store, cfg
    app.state.recent, app.state.popularity = recent, popularity
    app.state.impressions, app.state.metrics = impressions, metrics

    class SessionIn(BaseModel):
        """An anonymous session: its recent items stand in for a stored history."""

        model_config = ConfigDict(extra="forbid")

        items: list[Id] = Field(default_factory=list, max_length=cfg.max_history)  # oldest first
        k: int = Field(cfg.default_k, ge=1, le=cfg.max_k)
        exclude_seen: bool = True
        user_id: Id | None = None  # recorded with the impression only

    class RecommendParams(BaseModel):
        """The parameters of ``GET /recommendations/{user_id}`` (the path's, then the query's)."""

        user_id: Id
        k: int = Field(cfg.default_k, ge=1, le=cfg.max_k)
        exclude_seen: bool = True

    in_path = {"user_id"}

    def recommend_params(request: Request) -> RecommendParams:
        """The route's parameters, validated as FastAPI would (the same 422 detail) but by one
        model: FastAPI's per-parameter handling cost about 40 us of a cached answer's 360
        (in-process, MovieLens-100K model)."""
        raw = dict(request.path_params)
        query = request.query_params
        raw.update((name, query[name]) for name in ("k", "exclude_seen") if name in query)
        try:
            return RecommendParams.model_validate(raw)
        except ValidationError as err:
            errors = err.errors(include_url=False)
            for e in errors:
                e["loc"] = ("path" if e["loc"][0] in in_path else "query", *e["loc"])
            raise RequestValidationError(errors) from None

    def documented(params: type[BaseModel]) -> dict[str, Any]:
        """OpenAPI ``parameters`` for ``params``, the path's first, as FastAPI writes them."""
        schema = params.model_json_schema()["properties"]
        return {
            "parameters": [
                {
                    "name": name,
                    "in": "path" if name in in_path else "query",
                    "required": name in in_path,
                    "schema": field,
                }
                for name, field in schema.items()
            ],
            "responses": {
                "422": {
                    "description": "Validation Error",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                        }
                    },
                }
            },
        }

    def model() -> Loaded:
        """The model for one whole request, whatever swaps happen meanwhile."""
        loaded = holder.current
        if loaded is None:
            raise HTTPException(503, "no champion model is loaded yet; train and promote one first")
        return loaded

    def answer(
        request: Request,
        loaded: Loaded,
        user_id: str | None,
        history: list[str],
        k: int,
        exclude_seen: bool,
    ) -> dict[str, Any]:
        request_id, rec = request.scope["recsys.request_id"], loaded.recommender
        request.scope["recsys.model_version"] = loaded.version
        seen = set(history) if exclude_seen else set()
        cold = not rec.knows(history)
        if cold:
            ranked: list[Ranked] = popularity.popular(k, exclude=seen)
        else:
            ranked = [(i, s, MODEL) for i, s in rec.recommend(history, k, exclude_seen)]
        new, new_set = popularity.new_items(loaded.version, rec)
        if not new_set.isdisjoint(seen):
            new = [item for item in new if item not in seen]
        items = blend(ranked, new, k, cfg.exploration_share, request_seed(request_id))
        served_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        ids = tuple(item for item, _, _ in items)
        if not impressions.log(
            Impression(request_id, user_id, loaded.version, ids, served_at, cold)
        ):
            metrics.inc("recsys_impressions_dropped_total")
        metrics.inc("recsys_cold_start_total" if cold else "recsys_model_lists_total")
        metrics.inc("recsys_explored_items_total", sum(src == EXPLORE for _, _, src in items))
        return {
            "request_id": request_id,
            "user_id": user_id,
            "model_version": loaded.version,
            "cold_start": cold,
            "items": [{"item_id": i, "score": s, "source": src} for i, s, src in items],
        }

    # The two recommendation routes return their JSON themselves: ``answer`` builds exactly
    # ``RecommendationsOut`` (which still documents them), and FastAPI's validation and encoding
    # of a returned dict took about 50 us a request (a bare FastAPI route under wrk, 1 client).
    # The two recommendation routes are ``async def``, so they run on the event loop, one request
    # at a time: their work (one indexed history read, one forward pass) is short and CPU-bound.
    # As plain ``def`` routes in the thread pool, concurrent requests fought over the GIL
    # (bench/serve.py, 8 clients: 229 req/s in the pool, 572 on the loop; 470 with 1 client).
    @app.get(
        "/recommendations/{user_id}",
        response_model=RecommendationsOut,
        openapi_extra=documented(RecommendParams),
    )
    async def recommend(request: Request) -> Any:
        """Top-``k`` for a known user; the trending list for an unknown one (``cold_start``)."""
        params = recommend_params(request)
        loaded, user = model(), params.user_id
        limit = loaded.recommender.max_len
        history = merge_history(store.history_rows(user, limit), recent.get(user), limit)
        out = answer(request, loaded, user, history, params.k, params.exclude_seen)
        return JSONResponse(out)

    @app.post("/recommendations", response_model=RecommendationsOut)
    async def recommend_session(request: Request, session: SessionIn) -> Any:
        """Top-``k`` for an anonymous session, from the item ids it sends (oldest first)."""
        loaded, user = model(), session.user_id
        out = answer(request, loaded, user, session.items, session.k, session.exclude_seen)
        return JSONResponse(out)

    @app.post("/events", status_code=201)
    async def post_event(event: EventIn) -> dict[str, Any]:
        """Store one event; posting the same ``event_id`` again stores nothing (idempotent)."""
        now = dt.datetime.now(dt.UTC)
        record = event.model_dump()
        record[S.EVENT_TIME] = (event.event_time or now).isoformat()
        record[S.INGESTED_AT] = now
        if not event.event_id:  # a fresh id: two identical clicks are two events
            record[S.EVENT_ID] = f"api-{uuid.uuid4().hex}"
        (row,) = prepare_rows([record], now=now)
        try:
            # In a worker thread, the one hop off the event loop: a writer waiting for SQLite's
            # lock (a bulk import holds it) must not stall the recommendations meanwhile.
            stored = await run_in_threadpool(store.append_one, row)
        except OperationalError as err:  # SQLite's "database is locked" under load: not stored
            log.warning("event %s not stored: %s", row[S.EVENT_ID], err.orig)
            detail = "the event store is busy: retry with the same event_id"
            raise HTTPException(503, detail, headers={"Retry-After": "1"}) from err
        if stored:
            recent.add(row[S.USER_ID], (row[S.EVENT_TIME], row[S.EVENT_ID], row[S.ITEM_ID]))
        metrics.inc("recsys_events_stored_total" if stored else "recsys_events_duplicate_total")
        return {
            "event_id": row[S.EVENT_ID],
            "stored": stored,
            "duplicate": not stored,
            REQUEST_ID: row[REQUEST_ID],
        }

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness: always 200 while the process serves; says which model and any reload error."""
        loaded = holder.current
        return {
            "status": "degraded" if holder.last_error else "ok",
            "model_version": loaded.version if loaded else None,
            "reloads": holder.reloads,
            "reload_errors": holder.reload_errors,
            "last_error": holder.last_error,
            "last_error_at": holder.last_error_at.isoformat() if holder.last_error_at else None,
            "trending_items": len(popularity.current.items),
            "impressions": {
                "queued": impressions.queued,
                "written": impressions.written,
                "dropped": impressions.dropped,
                "failed": impressions.failed,
            },
        }

    @app.get("/ready")
    def ready() -> JSONResponse:
        """Readiness: 200 once a model is loaded, else 503."""
        loaded = holder.current
        body = {"ready": loaded is not None, "model_version": loaded.version if loaded else None}
        return JSONResponse(body, status_code=200 if loaded else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Prometheus text exposition: requests, latency, model version, reloads, errors."""
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
            labels = f'{{version="{_esc(loaded.version)}"}}'
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
        return PlainTextResponse(
            metrics.render(counters, gauges), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return app


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    poll: float = 10.0,
    serving: ServingConfig | None = None,
) -> None:
    """Run the API with uvicorn (the process's settings, such as torch's threads, are set here)."""
    import torch
    import uvicorn

    cfg = serving or ServingConfig()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    app = create_app(settings, poll_seconds=poll, serving=cfg)
    # The champion and the trending list are loaded here rather than at the app's startup, so
    # that what loading them allocates (MLflow's modules among it) is frozen below as well; the
    # startup then finds them loaded. Loaded after the freeze, they left full collections of
    # 95-131 ms, each one a stalled answer (bench/loadgen.py, 1 client: max 128 ms).
    app.state.holder.refresh()
    app.state.popularity.refresh()
    # What is loaded by now (torch, MLflow, FastAPI, the model: 200,000 objects) lives as long as
    # the process: freeze it out of the garbage collector's way. Each full collection walked all
    # of it, stalling answers by up to 240 ms (bench/serve.py, 8 clients: p99 78 ms, 7.6 frozen).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app, host=host, port=port, log_level="info", loop=cfg.event_loop,
        access_log=cfg.access_log,
    )  # fmt: skip
