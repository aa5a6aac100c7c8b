"""The serving API: recommendations from ``models:/recsys@champion``, events into the event store.

A user's history is the event store's plus the events just posted to this process (the
recent-events cache), so an event posted a moment ago already shapes the next answer, without
retraining. Unknown users get the trending list (``cold_start: true``); items the model has no row
for are blended into every list at the configured exploration share, seeded by the request id.
Every answer carries a request id and the model version, and is logged as an impression, which
clicks posted with that request id are joined with (``recsys.data.impressions``).

A background thread polls the registry and swaps in a new champion atomically
(``recsys.serving.champion``): a request uses the model it started with; a registry outage or a
version that fails to load keeps the last good model, and ``/health`` says why. ``/ready``: a
model is loaded; ``/metrics``: Prometheus text.

Annotations are evaluated here (no ``from __future__ import annotations``): FastAPI reads the
request models that ``create_app`` builds from the serving config.
"""

import datetime as dt
import gc
import logging
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from recsys import schema as S
from recsys.config import ServingConfig, Settings
from recsys.data.events import KEY_ID, REQUEST_ID, EventStore, prepare_rows
from recsys.data.impressions import ATTRIBUTION, Impression, ImpressionLog
from recsys.model.recommender import EXPLORE, MODEL, Ranked, blend, request_seed
from recsys.release.ab import CANDIDATE, ABConfig, arm_of
from recsys.release.freshness import Freshness, FreshnessConfig
from recsys.serving.auth import (
    EVENTS_WRITE,
    RECOMMENDATIONS_READ,
    Authenticator,
    AuthError,
    KeyStore,
    RateLimiter,
)
from recsys.serving.champion import ChampionHolder, Loaded, NewestData
from recsys.serving.edge import EdgeMiddleware, invalid_request
from recsys.serving.feedback import Popularity, RecentEvents, merge_history
from recsys.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from recsys.serving.metrics import Metrics
from recsys.serving.schemas import (
    EventIn,
    RecommendationsOut,
    documented,
    parse_params,
    request_models,
)
from recsys.serving.signing import RequestSigner, load_secret
from recsys.serving.store import StoreReader

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the routes share: the live model, the stores and the in-process state."""

    cfg: ServingConfig
    store: EventStore
    holder: ChampionHolder
    recent: RecentEvents
    popularity: Popularity
    impressions: ImpressionLog
    metrics: Metrics
    reader: StoreReader
    newest: NewestData
    max_lag_hours: float
    candidate: ChampionHolder  # an A/B test's candidate (nothing loaded: no test running)
    ab_share: float
    auth: Authenticator | None  # None: ``--no-auth``
    limiter: RateLimiter
    signer: RequestSigner

    def caller(self, request: Request, scope: str) -> str | None:
        """The id of the API key calling with ``scope`` (None without auth), or 401/403/429."""
        if self.auth is None:
            return None
        try:
            key = self.auth.check(request.headers.get("authorization"), scope)
        except AuthError as err:
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
            raise HTTPException(err.status, err.detail, headers=headers) from None
        wait = self.limiter.take(key.key_id)
        if wait > 0:
            self.metrics.inc("recsys_rate_limited_total")
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            raise HTTPException(429, f"rate limit of key {key.key_id} reached", headers=headers)
        return key.key_id

    def model_for(self, user_id: str | None) -> tuple[Loaded, str | None]:
        """The model that answers ``user_id`` and its A/B arm (None: no test, or anonymous)."""
        champion, candidate = self.model(), self.candidate.current
        if candidate is None or candidate.version == champion.version:
            return champion, None
        arm = arm_of(user_id, self.ab_share, candidate.version)
        return (candidate if arm == CANDIDATE else champion), arm

    def model(self) -> Loaded:
        """The model for one whole request, whatever swaps happen meanwhile."""
        loaded = self.holder.current
        if loaded is None:
            raise HTTPException(503, "no champion model is loaded yet; train and promote one first")
        return loaded

    def answer(
        self,
        request: Request,
        loaded: Loaded,
        user_id: str | None,
        history: list[str],
        k: int,
        exclude_seen: bool,
        degraded: bool = False,
        arm: str | None = None,
    ) -> dict[str, Any]:
        """One list, exactly as ``RecommendationsOut``, logged as an impression."""
        request_id, rec = self.signer.sign(user_id), loaded.recommender
        request.scope["recsys.request_id"] = request_id  # bound to the user: feedback checks it
        request.scope["recsys.model_version"] = loaded.version
        seen = set(history) if exclude_seen else set()
        cold = not rec.knows(history)
        if cold:
            ranked: list[Ranked] = self.popularity.popular(k, exclude=seen)
        else:
            ranked = [(i, s, MODEL) for i, s in rec.recommend(history, k, exclude_seen)]
        new, new_set = self.popularity.new_items(loaded.version, rec)
        if not new_set.isdisjoint(seen):
            new = [item for item in new if item not in seen]
        items = blend(ranked, new, k, self.cfg.exploration_share, request_seed(request_id))
        served_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        ids = tuple(item for item, _, _ in items)
        if not self.impressions.log(
            Impression(request_id, user_id, loaded.version, ids, served_at, cold, arm)
        ):
            self.metrics.inc("recsys_impressions_dropped_total")
        self.metrics.inc("recsys_cold_start_total" if cold else "recsys_model_lists_total")
        explored = sum(src == EXPLORE for _, _, src in items)
        self.metrics.inc("recsys_explored_items_total", explored)
        return {
            "request_id": request_id,
            "user_id": user_id,
            "model_version": loaded.version,
            "cold_start": cold,
            "degraded": degraded,
            "arm": arm,
            "items": [{"item_id": i, "score": s, "source": src} for i, s, src in items],
        }


def create_app(
    settings: Settings, poll_seconds: float = 10.0, serving: ServingConfig | None = None
) -> FastAPI:
    """The API. The registry is polled every ``poll_seconds`` (0 disables the poller)."""
    cfg = serving or ServingConfig()
    store = EventStore(settings.event_store_url, timeout_s=cfg.store_timeout_s)
    svc = Services(
        cfg=cfg,
        store=store,
        holder=ChampionHolder(settings, cfg.state_cache),
        recent=RecentEvents(cfg.cache_users, cfg.cache_events, cfg.cache_ttl_s),
        popularity=Popularity(store, cfg),
        impressions=ImpressionLog(store.engine, cfg.impression_queue),
        metrics=Metrics(),
        reader=StoreReader(store, cfg.store_retry_s),
        newest=NewestData(settings),
        max_lag_hours=FreshnessConfig.load().max_lag_hours,
        candidate=ChampionHolder(settings, cfg.state_cache, alias=CANDIDATE),
        ab_share=ABConfig.load().share,
        auth=Authenticator(KeyStore(store.engine), cfg.key_cache_s) if cfg.require_keys else None,
        limiter=RateLimiter(cfg.rate_per_key, cfg.rate_burst),
        signer=RequestSigner(load_secret(settings.home), ATTRIBUTION),
    )
    svc.metrics.watch(svc.holder, svc.impressions, svc.popularity)
    if not cfg.require_keys:
        log.warning("API keys are not required (--no-auth): anyone who reaches the API may write")
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(poll_seconds):
            svc.holder.refresh()
            svc.candidate.refresh()
            svc.popularity.refresh_if_stale()

    async def lifespan(app: FastAPI):  # noqa: ANN202
        svc.holder.refresh()
        svc.candidate.refresh()
        svc.popularity.refresh()
        svc.impressions.start()
        if poll_seconds > 0:
            threading.Thread(target=poll, name="champion-poller", daemon=True).start()
        yield
        stop.set()
        svc.impressions.close()

    app = FastAPI(title="recsys", version="0.2.0", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_middleware(
        EdgeMiddleware,
        metrics=svc.metrics,
        holder=svc.holder,
        max_body=cfg.max_body_bytes,
        max_in_flight=cfg.max_in_flight,
    )
    app.state.holder, app.state.store, app.state.serving = svc.holder, store, cfg
    app.state.candidate = svc.candidate
    app.state.recent, app.state.popularity = svc.recent, svc.popularity
    app.state.impressions, app.state.metrics = svc.impressions, svc.metrics
    _recommendation_routes(app, svc, *request_models(cfg))
    _event_routes(app, svc)
    _operations_routes(app, svc)
    return app


def _recommendation_routes(
    app: FastAPI, svc: Services, SessionIn: type[BaseModel], RecommendParams: type[BaseModel]
) -> None:
    # Both return ``answer``'s dict as JSON, unchecked by FastAPI: it is exactly the documented
    # ``RecommendationsOut`` (decisions.md: "Recommendations return JSON directly").
    # ``async def``: short CPU-bound work runs on the event loop, one request at a time, rather
    # than fight over the GIL in the pool (decisions.md: "Recommendation routes on the event loop").
    @app.get(
        "/recommendations/{user_id}",
        response_model=RecommendationsOut,
        openapi_extra=documented(RecommendParams),
    )
    async def recommend(request: Request) -> Any:
        """Top-``k`` for a known user; the trending list for an unknown one (``cold_start``)."""
        svc.caller(request, RECOMMENDATIONS_READ)
        params = parse_params(request, RecommendParams)
        user = params.user_id
        loaded, arm = svc.model_for(user)
        limit = loaded.recommender.max_len
        stored = svc.reader.history_rows(user, limit)  # None: the store is out
        history = merge_history(stored or [], svc.recent.get(user), limit)
        out = svc.answer(
            request, loaded, user, history, params.k, params.exclude_seen, stored is None, arm
        )
        return JSONResponse(out)

    @app.post("/recommendations", response_model=RecommendationsOut)
    async def recommend_session(request: Request, session: SessionIn) -> Any:
        """Top-``k`` for an anonymous session, from the item ids it sends (oldest first)."""
        svc.caller(request, RECOMMENDATIONS_READ)
        user = session.user_id
        loaded, arm = svc.model_for(user)
        out = svc.answer(
            request, loaded, user, session.items, session.k, session.exclude_seen, False, arm
        )
        return JSONResponse(out)


def _event_routes(app: FastAPI, svc: Services) -> None:
    @app.post("/events", status_code=201)
    async def post_event(event: EventIn, request: Request) -> dict[str, Any]:
        """Store one event; posting the same ``event_id`` again stores nothing (idempotent)."""
        key_id = svc.caller(request, EVENTS_WRITE)
        now = dt.datetime.now(dt.UTC)
        record = event.model_dump()
        record[S.EVENT_TIME] = (event.event_time or now).isoformat()
        record[S.INGESTED_AT] = now
        if not event.event_id:  # a fresh id: two identical clicks are two events
            record[S.EVENT_ID] = f"api-{uuid.uuid4().hex}"
        (row,) = prepare_rows([record], now=now)
        row[KEY_ID] = key_id  # who wrote it (lineage), never taken from the body
        try:
            if event.request_id:  # refused with 422 unless this user was served that list lately
                await run_in_threadpool(_check_feedback, svc, row)
            # In a worker thread, the one hop off the event loop: a writer waiting for SQLite's
            # lock (a bulk import holds it) must not stall the recommendations meanwhile.
            stored = await run_in_threadpool(svc.store.append_one, row)
        except OperationalError as err:  # locked (SQLite under load) or out: not stored
            log.warning("event %s not stored: %s", row[S.EVENT_ID], err.orig)
            detail = "the event store is busy or out: retry with the same event_id"
            raise HTTPException(503, detail, headers={"Retry-After": "1"}) from err
        if stored:
            svc.recent.add(row[S.USER_ID], (row[S.EVENT_TIME], row[S.EVENT_ID], row[S.ITEM_ID]))
        svc.metrics.inc("recsys_events_stored_total" if stored else "recsys_events_duplicate_total")
        return {
            "event_id": row[S.EVENT_ID],
            "stored": stored,
            "duplicate": not stored,
            REQUEST_ID: row[REQUEST_ID],
        }


def _check_feedback(svc: Services, row: dict[str, Any]) -> None:
    """422 for feedback on a list not served to this user lately, or already answered."""
    why = svc.signer.check(row[REQUEST_ID], row[S.USER_ID])
    if not why and svc.store.answered(
        row[REQUEST_ID], row[S.ITEM_ID], row[S.EVENT_TYPE], row[S.EVENT_ID]
    ):
        why = f"this list was already answered with a {row[S.EVENT_TYPE]} on {row[S.ITEM_ID]}"
    if why:
        svc.metrics.inc("recsys_feedback_refused_total")
        raise HTTPException(422, f"request_id {row[REQUEST_ID]!r} refused: {why}")


def _operations_routes(app: FastAPI, svc: Services) -> None:
    holder, impressions = svc.holder, svc.impressions

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness: always 200 while the process serves; says which model and any reload error."""
        loaded = holder.current
        return {
            "status": "degraded" if holder.last_error or not svc.reader.up else "ok",
            "model_version": loaded.version if loaded else None,
            "candidate_version": svc.candidate.current.version if svc.candidate.current else None,
            "auth": "api keys" if svc.auth is not None else "off (--no-auth)",
            "event_store": svc.reader.status(),
            "reloads": holder.reloads,
            "reload_errors": holder.reload_errors,
            "last_error": holder.last_error,
            "last_error_at": holder.last_error_at.isoformat() if holder.last_error_at else None,
            "trending_items": len(svc.popularity.current.items),
            "freshness": Freshness.of(
                loaded.version if loaded else None,
                loaded.data_end if loaded else None,
                svc.newest.get(),
                svc.max_lag_hours,
            ).as_dict(),
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
        body = {
            "ready": loaded is not None,
            "model_version": loaded.version if loaded else None,
            "event_store": "up" if svc.reader.up else "out: answers are degraded",
        }
        return JSONResponse(body, status_code=200 if loaded else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Response:
        """Prometheus text exposition: requests, latency, model version, reloads, errors, and the
        process's CPU, memory, open files and garbage collections."""
        return Response(svc.metrics.render(), media_type=METRICS_CONTENT_TYPE)


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
    # that what loading them allocates (MLflow's modules among it) is frozen below as well.
    app.state.holder.refresh()
    app.state.popularity.refresh()
    # What is loaded by now lives as long as the process: freeze it out of the garbage collector's
    # way (decisions.md: "Garbage collector frozen after loading").
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app, host=host, port=port, log_level="info", loop=cfg.event_loop,
        access_log=cfg.access_log,
    )  # fmt: skip
