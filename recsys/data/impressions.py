"""Impressions: every served list, logged so that clicks can be joined with what was shown.

Each answer of the API is one *impression*: its request id, the user (None for an anonymous
session), the ranked item ids, the model version and when it was served. They live in the
``impressions`` table of the event store's database, written by a background thread so the
request path only appends to a bounded queue (``ImpressionLog``).

A click posted with ``request_id`` on one of that list's items, ingested within ``ATTRIBUTION``
of the list being served, is *attributed* to the impression. The online click-through rate of a
model version is the share of its impressions with at least one attributed click
(``ctr_by_version``); cold-start lists (the popularity list, the same whatever the model) are left
out unless asked for.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from recsys import schema as S
from recsys.config import LakePath
from recsys.data.events import KEY_ID, REQUEST_ID, EventStore, events_table, utc_naive
from recsys.data.lake import Interval, write_json

log = logging.getLogger(__name__)

ATTRIBUTION = dt.timedelta(hours=1)  # clicks later than this after the list are not its clicks
CLOCK_SKEW = dt.timedelta(minutes=1)  # a click may reach another replica "before" the list
CLICK = "click"
WRITE_BATCH = 500
# The writer waits this long for a batch to fill: one commit a second, not one per request. On
# SQLite each commit locks readers out for a few milliseconds, the request path's history reads.
LINGER_S = 1.0

metadata = sa.MetaData()
impressions_table = sa.Table(
    "impressions",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column(S.USER_ID, sa.String(128), nullable=True),  # None: an anonymous session
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("items", sa.Text(), nullable=False),  # JSON list of item ids, in served order
    sa.Column("cold_start", sa.Boolean(), nullable=False),  # the popularity list was served
    sa.Column("served_at", sa.DateTime(), nullable=False, index=True),  # naive UTC
    sa.Column("arm", sa.String(16), nullable=True),  # an A/B test's arm; None: no test running
)


@dataclass(frozen=True)
class Impression:
    request_id: str
    user_id: str | None
    model_version: str
    items: tuple[str, ...]
    served_at: dt.datetime  # naive UTC
    cold_start: bool = False
    arm: str | None = None  # "champion" or "candidate" during an A/B test

    def row(self) -> dict[str, Any]:
        """The table row. Spelled out: ``dataclasses.asdict`` deep-copies, and the writer thread
        builds 500 of these per batch while holding the GIL the request path needs."""
        return {
            "request_id": self.request_id,
            S.USER_ID: self.user_id,
            "model_version": self.model_version,
            "items": json.dumps(list(self.items)),
            "cold_start": self.cold_start,
            "served_at": self.served_at,
            "arm": self.arm,
        }


@dataclass(frozen=True)
class Click:
    request_id: str
    item_id: str
    at: dt.datetime  # when it reached us (``ingested_at``), naive UTC


@dataclass(frozen=True)
class VersionCtr:
    model_version: str
    impressions: int  # lists served
    clicked: int  # lists with at least one attributed click
    clicks: int  # attributed clicks, each (list, item) once

    @property
    def ctr(self) -> float:
        return self.clicked / self.impressions if self.impressions else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ctr": self.ctr}


# -- the pure join -----------------------------------------------------------------------------
def attribute(
    impressions: Iterable[Impression],
    clicks: Iterable[Click],
    window: dt.timedelta = ATTRIBUTION,
) -> list[tuple[Impression, Click]]:
    """Clicks joined with the impression they answer: same request id, an item of the served
    list, at most ``window`` after it was served. Each (request, item) pair is kept once."""
    by_id = {imp.request_id: imp for imp in impressions}
    seen: set[tuple[str, str]] = set()
    joined = []
    for click in sorted(clicks, key=lambda c: c.at):
        imp = by_id.get(click.request_id)
        key = (click.request_id, click.item_id)
        if imp is None or key in seen or click.item_id not in imp.items:
            continue
        if not imp.served_at - CLOCK_SKEW <= click.at < imp.served_at + window:
            continue
        seen.add(key)
        joined.append((imp, click))
    return joined


def ctr_of(
    impressions: Sequence[Impression],
    clicks: Iterable[Click],
    window: dt.timedelta = ATTRIBUTION,
    include_cold: bool = False,
) -> dict[str, VersionCtr]:
    """Click-through rate per model version, ordered by version; see ``attribute``."""
    kept = [imp for imp in impressions if include_cold or not imp.cold_start]
    shown: dict[str, int] = {}
    for imp in kept:
        shown[imp.model_version] = shown.get(imp.model_version, 0) + 1
    clicked: dict[str, set[str]] = {v: set() for v in shown}
    clicks_n = dict.fromkeys(shown, 0)
    for imp, _ in attribute(kept, clicks, window):
        clicked[imp.model_version].add(imp.request_id)
        clicks_n[imp.model_version] += 1
    order = sorted(shown, key=lambda v: (len(v), v))  # "10" after "9"
    return {v: VersionCtr(v, shown[v], len(clicked[v]), clicks_n[v]) for v in order}


# -- I/O ---------------------------------------------------------------------------------------
def read(engine: sa.Engine, start: dt.datetime, end: dt.datetime) -> list[Impression]:
    """Impressions served in ``[start, end)``."""
    t = impressions_table.c
    query = (
        sa.select(
            t.request_id, t.user_id, t.model_version, t["items"], t.served_at, t.cold_start, t.arm
        )
        .where(t.served_at >= utc_naive(start), t.served_at < utc_naive(end))
        .order_by(t.served_at, t.request_id)
    )
    with engine.connect() as conn:
        return [
            Impression(rid, user, version, tuple(json.loads(items)), served, bool(cold), arm)
            for rid, user, version, items, served, cold, arm in conn.execute(query)
        ]


def read_clicks(engine: sa.Engine, start: dt.datetime, end: dt.datetime) -> list[Click]:
    """Clicks that carry a request id, ingested in ``[start, end)``, written with an API key:
    the API checked their request id was served to that user, lately, and not answered yet.
    Imported or unauthenticated clicks are not feedback anyone vouched for: they never count."""
    c = events_table.c
    query = (
        sa.select(c[REQUEST_ID], c[S.ITEM_ID], c[S.INGESTED_AT])
        .where(c[S.INGESTED_AT] >= utc_naive(start), c[S.INGESTED_AT] < utc_naive(end))
        .where(c[S.EVENT_TYPE] == CLICK, c[REQUEST_ID].is_not(None), c[S.ITEM_ID].is_not(None))
        .where(c[KEY_ID].is_not(None))
    )
    with engine.connect() as conn:
        return [Click(*row) for row in conn.execute(query)]


def open_engine(store_url: str) -> sa.Engine:
    """The event store's engine with the impressions table there, as this release writes it."""
    store = EventStore(store_url)
    prepare(store.engine)
    return store.engine


def prepare(engine: sa.Engine) -> None:
    """Create the table, or add the columns a table of an older release lacks."""
    from recsys.data.events import add_missing_columns

    metadata.create_all(engine)
    add_missing_columns(engine, impressions_table)


def ctr_by_version(
    store_url: str,
    start: dt.datetime,
    end: dt.datetime,
    window: dt.timedelta = ATTRIBUTION,
    include_cold: bool = False,
) -> dict[str, dict[str, Any]]:
    """Online CTR per model version of the lists served in ``[start, end)``, as plain dicts
    (``impressions``, ``clicked``, ``clicks``, ``ctr``) for XCom. Clicks up to ``window`` after
    ``end`` count, so run it for an interval once ``end + window`` has passed."""
    store = EventStore(store_url)
    prepare(store.engine)
    try:
        shown = read(store.engine, start, end)
        clicks = read_clicks(store.engine, start - CLOCK_SKEW, end + window)
    finally:
        store.engine.dispose()
    return {v: ctr.as_dict() for v, ctr in ctr_of(shown, clicks, window, include_cold).items()}


def _insert(engine: sa.Engine) -> sa.Insert:
    """INSERT that leaves an existing request id alone (a retried batch writes nothing twice)."""
    name = engine.dialect.name
    if name in ("sqlite", "postgresql"):
        dialect = importlib.import_module(f"sqlalchemy.dialects.{name}")
        return dialect.insert(impressions_table).on_conflict_do_nothing(
            index_elements=["request_id"]
        )
    return impressions_table.insert().prefix_with("IGNORE")  # MySQL/MariaDB


class ImpressionLog:
    """Writes impressions from a background thread; ``log`` never blocks the request path.

    The queue holds at most ``capacity`` impressions: beyond that they are dropped and counted
    (serving matters more than its log). ``close`` writes what is queued before it returns.
    """

    def __init__(
        self, engine: sa.Engine, capacity: int = 10_000, linger_s: float = LINGER_S
    ) -> None:
        self.engine, self.capacity, self.linger_s = engine, capacity, linger_s
        prepare(engine)
        self.written = self.dropped = self.failed = 0
        self._queue: deque[Impression] = deque()
        self._busy = 0  # impressions taken from the queue and not yet written
        self._cond = threading.Condition()
        self._stop = False
        self._flushing = 0  # callers waiting in ``flush``: the writer does not linger for them
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
            self._thread.start()

    def log(self, impression: Impression) -> bool:
        """Queue one impression; False if the queue was full and it was dropped."""
        with self._cond:
            if len(self._queue) >= self.capacity:
                self.dropped += 1
                return False
            self._queue.append(impression)
            # Wake the writer only when it has something to do: at its first impression and when a
            # batch is full. A wake-up per request would hand it the GIL at every request.
            if len(self._queue) == 1 or len(self._queue) == WRITE_BATCH:
                self._cond.notify_all()
            return True

    @property
    def queued(self) -> int:
        return len(self._queue) + self._busy

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or failed). False on timeout."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._thread is None:
            return
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._thread = None

    def write(self, impressions: Sequence[Impression]) -> None:
        """Insert impressions now (the writer thread's job; also usable directly)."""
        with self.engine.begin() as conn:
            conn.execute(_insert(self.engine), [imp.row() for imp in impressions])

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if self._stop and not self._queue:
                    return
                self._cond.wait_for(  # let a batch gather, unless asked to write now
                    lambda: len(self._queue) >= WRITE_BATCH or self._stop or self._flushing,
                    self.linger_s,
                )
                batch = [self._queue.popleft() for _ in range(min(WRITE_BATCH, len(self._queue)))]
                self._busy = len(batch)
            try:
                self.write(batch)
                written, failed = len(batch), 0
            except Exception:  # a failed batch is counted and logged, the writer keeps going
                log.exception("could not write %d impressions", len(batch))
                written, failed = 0, len(batch)
            with self._cond:
                self.written += written
                self.failed += failed
                self._busy = 0
                self._cond.notify_all()


# -- the collection step -----------------------------------------------------------------------
def ctr_path(lake_root: LakePath, interval: Interval) -> LakePath:
    """Where the online CTR of the lists served in ``interval`` is kept in the lake."""
    return lake_root / "online" / "ctr" / interval.id / "ctr.json"


def collect_ctr(
    store_url: str, lake_root: LakePath, interval: Interval, now: dt.datetime
) -> list[dict[str, Any]]:
    """Join the clicks with the lists served in ``interval`` and in the interval before it, and
    write each one's CTR per model version to the lake (``ctr_path``), replacing older numbers.

    Clicks count up to ``ATTRIBUTION`` after a list was served, so an interval's numbers are
    ``final`` only once ``now`` (naive UTC) is past its end plus that window: the run of the next
    interval rewrites them final. Returns what was written, oldest interval first.
    """
    previous = Interval(interval.start - (interval.end - interval.start), interval.start)
    written = []
    for iv in (previous, interval):
        result = {
            "interval": iv.as_dict(),
            "final": now >= iv.end + ATTRIBUTION,
            "computed_at": now.isoformat(),
            "versions": ctr_by_version(store_url, iv.start, iv.end),
        }
        write_json(result, ctr_path(lake_root, iv))
        written.append(result)
    return written
