"""The event store as serving reads it: after a failed read it is left alone for a while, so that
a store that is down or does not answer costs one timeout per ``retry_s``, not one per request."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import sqlalchemy as sa

from recsys.data.events import EventStore

log = logging.getLogger(__name__)

Row = tuple[str, str, str]


class StoreReader:
    """History reads with a breaker: ``history_rows`` answers None while the store is out."""

    def __init__(self, store: EventStore, retry_s: float) -> None:
        self.store, self.retry_s = store, retry_s
        self.last_error: str | None = None
        self.last_error_at: dt.datetime | None = None
        self.failures = 0
        self._open_until = 0.0  # monotonic time before which the store is not tried
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self.last_error is None

    def history_rows(self, user_id: str, limit: int) -> list[Row] | None:
        """The user's stored history, or None when the store cannot answer (now, or lately)."""
        if time.monotonic() < self._open_until:
            return None
        try:
            rows = self.store.history_rows(user_id, limit)
        except sa.exc.SQLAlchemyError as err:  # refused, timed out, pool exhausted...
            self.failed(err)
            return None
        if self.last_error is not None:
            log.info("the event store answers again")
            self.last_error = None
        return rows

    def failed(self, err: Exception) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            self.last_error_at = dt.datetime.now(dt.UTC)
            self._open_until = time.monotonic() + self.retry_s
        log.warning("the event store did not answer (%s); serving without it for %.0f s",
                    self.last_error, self.retry_s)  # fmt: skip

    def status(self) -> dict[str, object]:
        return {
            "up": self.up,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "failures": self.failures,
        }
