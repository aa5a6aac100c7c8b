"""The serving API: recommendations from ``models:/recsys@champion``, events into the event store.

A user's history is read from the event store at request time, so an event posted a moment ago
already shapes the next answer, without retraining. A background thread polls the registry and
swaps in a new champion atomically; a failed load keeps the last good model.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from recsys import schema as S
from recsys.config import CHAMPION, Settings
from recsys.events import EventStore, prepare_rows
from recsys.recommender import Recommender

log = logging.getLogger(__name__)

MAX_K = 100


@dataclass
class Loaded:
    version: str
    recommender: Recommender


class ChampionHolder:
    """Holds the live model; ``refresh()`` loads a new champion and swaps it in one assignment."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: Loaded | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Load the champion if it changed. Returns True when a new version was swapped in."""
        from recsys.registry import Registry

        with self._lock:
            try:
                reg = Registry(self.settings)
                champion = reg.alias(CHAMPION)
                if champion is None or (
                    self.current and self.current.version == str(champion.version)
                ):
                    return False
                with tempfile.TemporaryDirectory() as tmp:
                    recommender = Recommender.load(
                        reg.version_checkpoint(champion.version, Path(tmp))
                    )
            except Exception as err:  # keep serving the last good model, and say why in /health
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("could not load the champion; keeping the current model")
                return False
            self.current = Loaded(str(champion.version), recommender)  # atomic swap
            self.reloads += 1
            self.last_error = None
            log.info("serving %s version %s", self.settings.registered_model, champion.version)
            return True

    def poll(self, every: float, stop: threading.Event) -> None:
        while not stop.wait(every):
            self.refresh()


class EventIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    event_type: str = Field("view", pattern="^(" + "|".join(S.EVENT_TYPES) + ")$")
    event_time: dt.datetime | None = None
    event_id: str | None = Field(None, min_length=1, max_length=128)
    value: float | None = None


class Recommendation(BaseModel):
    item_id: str
    score: float


class Recommendations(BaseModel):
    user_id: str
    model_version: str
    items: list[Recommendation]


def create_app(settings: Settings, poll_seconds: float = 10.0) -> FastAPI:
    """The API. The registry is polled every ``poll_seconds`` (0 disables the poller)."""
    store = EventStore(settings.event_store_url)
    holder = ChampionHolder(settings)
    stop = threading.Event()

    async def lifespan(app: FastAPI):  # noqa: ANN202
        holder.refresh()
        if poll_seconds > 0:
            threading.Thread(target=holder.poll, args=(poll_seconds, stop), daemon=True).start()
        yield
        stop.set()

    app = FastAPI(title="recsys", version="0.1.0", lifespan=lifespan)
    app.state.holder = holder
    app.state.store = store

    @app.get("/recommendations/{user_id}", response_model=Recommendations)
    def recommend(
        user_id: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        exclude_seen: bool = True,
    ) -> Any:
        loaded = holder.current
        if loaded is None:
            raise HTTPException(503, "no champion model is loaded yet; train and promote one first")
        history = store.history(user_id, limit=loaded.recommender.checkpoint.model_config.max_len)
        if not history:
            raise HTTPException(404, f"unknown user {user_id!r}: no events in the event store")
        recs = loaded.recommender.recommend(history, k=k, exclude_seen=exclude_seen)
        return {
            "user_id": user_id,
            "model_version": loaded.version,
            "items": [{"item_id": item, "score": score} for item, score in recs],
        }

    @app.post("/events", status_code=201)
    def post_event(event: EventIn) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        record = event.model_dump()
        record[S.EVENT_TIME] = (event.event_time or now).isoformat()
        record[S.INGESTED_AT] = now
        if not event.event_id:  # a fresh id: two identical clicks are two events
            record[S.EVENT_ID] = f"api-{uuid.uuid4().hex}"
        rows = prepare_rows([record], now=now)
        stored = store.append(rows) == 1
        return {"event_id": rows[0][S.EVENT_ID], "stored": stored, "duplicate": not stored}

    @app.get("/health")
    def health() -> dict[str, Any]:
        loaded = holder.current
        return {
            "status": "ok",
            "model_version": loaded.version if loaded else None,
            "reloads": holder.reloads,
            "last_error": holder.last_error,
        }

    return app


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, poll: float = 10.0
) -> None:
    import uvicorn

    uvicorn.run(create_app(settings, poll_seconds=poll), host=host, port=port, log_level="info")
