"""The live model: the champion loaded from the registry, swapped in atomically when it moves."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from recsys.config import CHAMPION, Settings
from recsys.model.recommender import Recommender
from recsys.registry.tags import TAG_DATA_END

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    version: str
    recommender: Recommender
    data_end: str | None = None  # the version's data watermark (its snapshot's last ingested_at)


class NewestData:
    """The newest validated data's watermark, read from the lake at most every ``ttl_s``."""

    def __init__(self, settings: Settings, ttl_s: float = 30.0) -> None:
        self.settings, self.ttl_s = settings, ttl_s
        self._value: str | None = None
        self._read_at = -float("inf")

    def get(self) -> str | None:
        import time

        from recsys.release.freshness import newest_validated

        now = time.monotonic()
        if now - self._read_at >= self.ttl_s:
            try:
                self._value = newest_validated(self.settings)
            except Exception as err:  # a lake this process cannot read: unknown, not a crash
                log.warning("newest validated data unknown: %s", err)
                self._value = None
            self._read_at = now
        return self._value


class ChampionHolder:
    """Holds the live model; ``refresh()`` loads a new champion and swaps it in one assignment.

    With ``alias="candidate"`` it holds an A/B test's candidate instead, and lets it go when the
    alias is removed (the champion is kept whatever happens: something must answer).
    """

    def __init__(self, settings: Settings, state_cache: int = 0, alias: str = CHAMPION) -> None:
        self.settings, self.alias = settings, alias
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
                champion = reg.alias(self.alias)  # raises when the registry cannot answer
                if champion is None and self.alias != CHAMPION and self.current is not None:
                    log.info("%s removed: no longer serving version %s", self.alias,
                             self.current.version)  # fmt: skip
                    self.current = None
                    self.last_error = None
                    return True
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
            data_end = champion.tags.get(TAG_DATA_END)
            self.current = Loaded(str(champion.version), recommender, data_end)  # atomic swap
            self.reloads += 1
            self.last_error = None
            log.info("serving %s version %s as %s", self.settings.registered_model,
                     champion.version, self.alias)  # fmt: skip
            return True
