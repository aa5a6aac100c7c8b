"""What users did a moment ago, as serving needs it: the recent-events cache and the trending list.

``RecentEvents`` keeps the events posted to this process for a few minutes, so the next answer
reflects them even before the store (a replica, another writer's transaction) returns them;
``merge_history`` joins them with the store's rows. ``Popularity`` is the trending list (most
events in a recent window) that unknown users get, and the pool of new items (no row in the
model) that exploration draws from. Neither touches pandas: both are on the request path.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from recsys.config import ServingConfig
from recsys.data.events import EventStore
from recsys.model.recommender import POPULAR, Ranked, Recommender

log = logging.getLogger(__name__)

Row = tuple[str, str, str]  # (event_time, event_id, item_id), as EventStore.history_rows


class RecentEvents:
    """Events posted in the last ``ttl_s`` seconds, per user: an LRU of ``max_users`` users with
    at most ``per_user`` events each. Thread-safe."""

    def __init__(
        self,
        max_users: int,
        per_user: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_users, self.per_user, self.ttl_s, self.clock = max_users, per_user, ttl_s, clock
        self._users: OrderedDict[str, deque[tuple[float, Row]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, user_id: str, row: Row) -> None:
        with self._lock:
            events = self._users.pop(user_id, None) or deque(maxlen=self.per_user)
            events.append((self.clock(), row))
            self._users[user_id] = events  # most recently used last
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)

    def get(self, user_id: str) -> list[Row]:
        """The user's cached rows that have not expired (in posting order)."""
        with self._lock:
            events = self._users.get(user_id)
            if not events:
                return []
            oldest = self.clock() - self.ttl_s
            while events and events[0][0] < oldest:
                events.popleft()
            return [row for _, row in events]

    def __len__(self) -> int:
        return len(self._users)


def merge_history(stored: Sequence[Row], recent: Iterable[Row], limit: int) -> list[str]:
    """Item ids of ``stored`` and ``recent`` rows, each event once (by event id), ordered as the
    store orders them (event time, then event id), the last ``limit``, oldest first."""
    rows = {row[1]: row for row in stored}
    extra = [row for row in recent if row[1] not in rows]
    if not extra:  # the usual case: the store already has every posted event
        return [item for _, _, item in stored[-limit:]]
    rows.update((row[1], row) for row in extra)
    ordered = sorted(rows.values(), key=lambda row: (row[0] or "", row[1]))
    return [item for _, _, item in ordered[-limit:]]


@dataclass(frozen=True)
class Trending:
    """One computation of the trending list: items by events in the window, most first."""

    items: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()
    computed_at: float = float("-inf")  # monotonic seconds; -inf: never computed
    new: dict = field(default_factory=dict, compare=False)  # version -> (list, set) of new items


class Popularity:
    """The trending list from the event store: items by events in the last ``trending_days``
    before the newest event (so replayed data has a trend too), topped up with all-time
    favourites (counted 0) to ``cold_start_size`` items. Recomputed at most every
    ``trending_refresh_s`` by ``refresh_if_stale``, which the poller calls, never a request. A
    failure keeps the last list."""

    def __init__(
        self,
        store: EventStore,
        cfg: ServingConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.cfg, self.clock = store, cfg, clock
        self.current = Trending()
        self.errors = 0

    def refresh(self) -> bool:
        """Recompute the list now. Returns False (and keeps the old list) if the store failed."""
        cfg = self.cfg
        try:
            counts = self.store.item_counts(dt.timedelta(days=cfg.trending_days), cfg.trending_pool)
            if len(counts) < cfg.cold_start_size:  # a quiet window: top up with all-time favourites
                recent = {item for item, _ in counts}
                more = self.store.item_counts(None, cfg.trending_pool)
                counts += [(item, 0) for item, _ in more if item not in recent]
        except Exception:  # a store outage must not stop serving: the old list stays
            self.errors += 1
            log.exception("could not recompute the trending list; keeping the previous one")
            return False
        counts = counts[: cfg.trending_pool]
        items = tuple(item for item, _ in counts)
        self.current = Trending(items, tuple(n for _, n in counts), self.clock())  # atomic swap
        return True

    def refresh_if_stale(self) -> bool:
        if self.clock() - self.current.computed_at < self.cfg.trending_refresh_s:
            return False
        return self.refresh()

    def popular(self, k: int, exclude: set[str]) -> list[Ranked]:
        """The ``k`` most popular items not in ``exclude``; the score is their count of events in
        the window (0 for the all-time top-up)."""
        trending, out = self.current, []
        for item, count in zip(trending.items, trending.counts, strict=True):
            if item not in exclude:
                out.append((item, float(count), POPULAR))
                if len(out) == k:
                    break
        return out

    def new_items(self, version: str, recommender: Recommender) -> tuple[list[str], frozenset[str]]:
        """Trending items the model has no row for, most popular first, and as a set (memoised
        per model version)."""
        trending = self.current
        found = trending.new.get(version)
        if found is None:
            n_known = recommender.n_known
            items = [i for i in trending.items if not 0 < recommender.index.get(i, 0) <= n_known]
            found = trending.new[version] = (items, frozenset(items))  # a benign race if twice
        return found
