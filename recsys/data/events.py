"""The event store: one SQLAlchemy table of interaction events.

The store is a faithful *raw* log: ``prepare_rows`` keeps what it was given (a missing user or an
unparseable time included) so that nothing is lost; the validation gate downstream decides what may
be trained on. File import (``recsys.data.event_files``) is stricter, since a file can be fixed and
sent again: each row is checked, good rows load and bad ones go to a reject file with their reason.
Collection is keyed on ``ingested_at`` (when the event reached us), never on ``event_time``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recsys import schema as S

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# Not part of the documented event schema (nor of the lake): the id of the served list a click
# answers, so that clicks can be joined with their impressions (``recsys.data.impressions``).
REQUEST_ID = "request_id"
KEY_ID = "key_id"  # the API key that wrote an event; None: imported, or a server without keys
UNAUTHENTICATED = "(no key)"  # how ``writers`` names the events without one

metadata = sa.MetaData()
events_table = sa.Table(
    "events",
    metadata,
    sa.Column(S.EVENT_ID, sa.String(128), primary_key=True),
    sa.Column(S.USER_ID, sa.String(128), nullable=True),
    sa.Column(S.ITEM_ID, sa.String(128), nullable=True),
    sa.Column(S.EVENT_TYPE, sa.String(32), nullable=True),
    # Kept as received (normalised to ISO-8601 UTC when parseable) so bad input is never lost.
    sa.Column(S.EVENT_TIME, sa.String(64), nullable=True),
    sa.Column(S.INGESTED_AT, sa.DateTime(), nullable=False, index=True),  # naive UTC
    sa.Column(S.VALUE, sa.Float(), nullable=True),
    sa.Column(REQUEST_ID, sa.String(64), nullable=True),  # added later: see ``add_missing_columns``
    sa.Column(KEY_ID, sa.String(32), nullable=True),  # added later, as request_id
    # A user's history, as serving reads it (``_HISTORY``), from the index alone: in the order
    # asked, no table lookups (decisions.md: "Covering index for the history read").
    sa.Index(
        "ix_events_user_history", S.USER_ID, S.EVENT_TIME, S.EVENT_ID, S.ITEM_ID, S.EVENT_TYPE
    ),
    sa.Index("ix_events_request_id", REQUEST_ID),  # feedback checked for replays
)

_CHUNK = 5_000

# A user's newest events for serving (``EventStore.history_rows``), built once: building the
# expression costs more than running it (SQLAlchemy caches the compiled form, not the object).
_HISTORY = (
    sa.select(events_table.c[S.EVENT_TIME], events_table.c[S.EVENT_ID], events_table.c[S.ITEM_ID])
    .where(events_table.c[S.USER_ID] == sa.bindparam("user"))
    .where(events_table.c[S.ITEM_ID].is_not(None))
    .where(events_table.c[S.EVENT_TYPE].in_(S.EVENT_TYPES))
    .order_by(events_table.c[S.EVENT_TIME].desc(), events_table.c[S.EVENT_ID].desc())
    .limit(sa.bindparam("limit"))
)

# The same read as driver SQL, for the drivers whose placeholders are positional: SQLAlchemy's
# statement cache costs more than the read (decisions.md: "History read as driver SQL"). The event
# types are constants of ``recsys.schema``, written into the SQL as literals.
_POSITIONAL = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _history_sql(paramstyle: str) -> str | None:
    """``_HISTORY`` as SQL text for ``paramstyle``, or None for the styles it does not cover."""
    mark = _POSITIONAL.get(paramstyle)
    if mark is None:
        return None
    if not all(t.isidentifier() for t in S.EVENT_TYPES):  # safe to write as literals
        raise ValueError(f"event types must be plain identifiers: {S.EVENT_TYPES}")
    types = ", ".join(f"'{t}'" for t in S.EVENT_TYPES)
    return (
        f"SELECT {S.EVENT_TIME}, {S.EVENT_ID}, {S.ITEM_ID} FROM {events_table.name}"
        f" WHERE {S.USER_ID} = {mark} AND {S.ITEM_ID} IS NOT NULL AND {S.EVENT_TYPE} IN ({types})"
        f" ORDER BY {S.EVENT_TIME} DESC, {S.EVENT_ID} DESC LIMIT {mark}"
    )


def add_missing_columns(engine: sa.Engine, table: sa.Table = events_table) -> list[str]:
    """Add the nullable columns a table created by an older release lacks (``ALTER TABLE``).

    Only additive, nullable columns are ever added, so old rows read as NULL and old code that
    does not know the column keeps working. Returns the names of the columns added.
    """
    existing = {col["name"] for col in sa.inspect(engine).get_columns(table.name)}
    added = []
    for col in table.columns:
        if col.name in existing:
            continue
        if not col.nullable:
            raise RuntimeError(f"cannot add the non-nullable column {table.name}.{col.name}")
        ddl = f"ALTER TABLE {table.name} ADD COLUMN {col.name} {col.type.compile(engine.dialect)}"
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(ddl))
        except sa.exc.DBAPIError:  # another process added it at the same moment
            columns = sa.inspect(engine).get_columns(table.name)
            if col.name not in {c["name"] for c in columns}:
                raise
        log.info("added column %s.%s to the event store", table.name, col.name)
        added.append(col.name)
    return added


def add_missing_indexes(engine: sa.Engine, table: sa.Table = events_table) -> list[str]:
    """Create the indexes of ``table`` that a store made by an older release lacks (by name).

    Indexes it has and this release does not name are left alone. Returns the names created.
    """
    existing = {ix["name"] for ix in sa.inspect(engine).get_indexes(table.name)}
    created = []
    for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
        if index.name in existing:
            continue
        log.info("creating index %s on the event store (once)", index.name)
        try:
            index.create(engine)
        except sa.exc.DBAPIError:  # another process created it at the same moment
            if index.name not in {ix["name"] for ix in sa.inspect(engine).get_indexes(table.name)}:
                raise
        created.append(str(index.name))
    return created


def utc_naive(ts: dt.datetime) -> dt.datetime:
    """Normalise an aware or naive (assumed UTC) datetime to naive UTC, as stored."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
    return ts


SQLITE_BUSY_MS = 10_000  # how long a SQLite writer waits for the lock before "database is locked"


def _sqlite_concurrent(dbapi_conn: Any, _record: Any) -> None:
    """SQLite in WAL mode: readers (the API reading histories) no longer block the writer, and a
    writer waits up to ``SQLITE_BUSY_MS`` for another writer instead of failing after 5 s."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cur.close()


class EventStore:
    """Append-only, idempotent (on ``event_id``) store of events behind any SQLAlchemy URL."""

    def __init__(self, url: str, timeout_s: float | None = None) -> None:
        """``timeout_s``: on PostgreSQL, the longest a connection attempt or a statement may take
        (serving sets it: a store that does not answer must not hold a request for long)."""
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        connect_args: dict[str, Any] = {}
        if timeout_s is not None and sa.make_url(url).get_backend_name() == "postgresql":
            connect_args = {
                "connect_timeout": max(1, round(timeout_s)),
                "options": f"-c statement_timeout={round(timeout_s * 1000)}",
            }
        self.engine = sa.create_engine(url, connect_args=connect_args)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_concurrent)
        metadata.create_all(self.engine)
        add_missing_columns(self.engine)
        add_missing_indexes(self.engine)
        self._history_sql = _history_sql(self.engine.dialect.paramstyle)

    def append(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows (dicts with ``EVENT_COLUMNS``); existing event ids are left untouched.

        Returns the number of new events this call stored (whatever other writers store
        meanwhile): the ids the insert returns, not a count of the table before and after.
        """
        with self.engine.begin() as conn:
            return self.append_in(conn, rows)

    def append_in(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> int:
        """``append`` within the caller's transaction ``conn``."""
        inserted = 0
        for start in range(0, len(rows), _CHUNK):
            chunk = list(rows[start : start + _CHUNK])
            if chunk:
                inserted += len(conn.execute(self._insert_ignore(), chunk).all())
        return inserted

    def append_one(self, row: dict[str, Any]) -> bool:
        """Insert one row; False when its event id is already stored (safe under concurrency).

        Told by the row the insert returns: psycopg reports a rowcount of -1 for an
        ``INSERT ... ON CONFLICT DO NOTHING``."""
        with self.engine.begin() as conn:
            return conn.execute(self._insert_ignore(), row).first() is not None

    def _insert_ignore(self) -> sa.Insert:
        """``INSERT ... ON CONFLICT DO NOTHING RETURNING event_id``: one returned row per row
        stored."""
        name = self.engine.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # MySQL / MariaDB (10.5+ returns rows)
            return events_table.insert().prefix_with("IGNORE").returning(events_table.c[S.EVENT_ID])
        ignore = insert(events_table).on_conflict_do_nothing(index_elements=[S.EVENT_ID])
        return ignore.returning(events_table.c[S.EVENT_ID])

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one()

    def read_interval(self, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
        """Events ingested in ``[start, end)``, in a deterministic order."""
        import pandas as pd

        query = (
            sa.select(*(events_table.c[col] for col in S.EVENT_COLUMNS))
            .where(events_table.c[S.INGESTED_AT] >= utc_naive(start))
            .where(events_table.c[S.INGESTED_AT] < utc_naive(end))
            .order_by(events_table.c[S.INGESTED_AT], events_table.c[S.EVENT_ID])
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()  # tuples: much cheaper than row mappings
        return pd.DataFrame.from_records(rows, columns=list(S.EVENT_COLUMNS))

    def answered(self, request_id: str, item_id: str, event_type: str, event_id: str) -> bool:
        """Whether another event (not ``event_id``) already gave this feedback on this list."""
        c = events_table.c
        query = (
            sa.select(c[S.EVENT_ID])
            .where(c[REQUEST_ID] == request_id, c[S.ITEM_ID] == item_id)
            .where(c[S.EVENT_TYPE] == event_type, c[S.EVENT_ID] != event_id)
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def writers(self, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
        """Events ingested in ``[start, end)`` per API key that wrote them (lineage)."""
        key = events_table.c[KEY_ID]
        query = (
            sa.select(key, sa.func.count())
            .where(events_table.c[S.INGESTED_AT] >= utc_naive(start))
            .where(events_table.c[S.INGESTED_AT] < utc_naive(end))
            .group_by(key)
        )
        with self.engine.connect() as conn:
            counts = {k or UNAUTHENTICATED: int(n) for k, n in conn.execute(query)}
        return dict(sorted(counts.items()))

    def history(self, user_id: str, limit: int = 200) -> list[str]:
        """The user's most recent item ids, oldest first (for serving; no pandas)."""
        return [item for _, _, item in self.history_rows(user_id, limit)]

    def history_rows(self, user_id: str, limit: int = 200) -> list[tuple[str, str, str]]:
        """The user's most recent ``(event_time, event_id, item_id)``, oldest first."""
        with self.engine.connect() as conn:
            if self._history_sql is None:
                rows = conn.execute(_HISTORY, {"user": user_id, "limit": limit}).all()
            else:
                rows = conn.exec_driver_sql(self._history_sql, (user_id, int(limit))).all()
        return [tuple(row) for row in reversed(rows)]

    def item_counts(self, window: dt.timedelta | None, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` items with most events ingested in the ``window`` before the newest
        event (all time when None), most first, ties by item id. An empty store gives []."""
        c = events_table.c
        n = sa.func.count().label("n")
        query = (
            sa.select(c[S.ITEM_ID], n)
            .where(c[S.ITEM_ID].is_not(None), c[S.EVENT_TYPE].in_(S.EVENT_TYPES))
            .group_by(c[S.ITEM_ID])
            .order_by(n.desc(), c[S.ITEM_ID])
            .limit(limit)
        )
        with self.engine.connect() as conn:
            if window is not None:
                newest = conn.execute(sa.select(sa.func.max(c[S.INGESTED_AT]))).scalar_one()
                if newest is None:
                    return []
                query = query.where(c[S.INGESTED_AT] >= newest - window)
            return [(item, int(count)) for item, count in conn.execute(query)]

    def bounds(self) -> tuple[dt.datetime, dt.datetime] | None:
        """First and last ``ingested_at`` in the store, or None when empty."""
        c = events_table.c[S.INGESTED_AT]
        with self.engine.connect() as conn:
            lo, hi = conn.execute(sa.select(sa.func.min(c), sa.func.max(c))).one()
        return None if lo is None else (lo, hi)


def event_id_for(user: Any, item: Any, event_type: Any, event_time: Any) -> str:
    """Deterministic id for events that come without one, so re-imports are idempotent."""
    key = "\x1f".join(str(v) for v in (user, item, event_type, event_time))
    return "h-" + hashlib.sha1(key.encode()).hexdigest()[:20]


def _parse_time(value: Any) -> dt.datetime | None:
    """ISO-8601 text (UTC when no offset) or Unix seconds -> naive UTC; None if unparseable."""
    if value is None or value != value:  # None or NaN
        return None
    try:
        if isinstance(value, dt.datetime):
            return utc_naive(value)
        if isinstance(value, int | float):
            return dt.datetime.fromtimestamp(float(value), dt.UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):  # beyond what datetime can hold
        return None
    text = str(value).strip()
    try:
        return dt.datetime.fromtimestamp(float(text), dt.UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        pass
    try:
        return utc_naive(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except (OverflowError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None or value != value:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def prepare_rows(
    records: Iterable[dict[str, Any]],
    default_event_type: str = "view",
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Turn records in the documented schema into store rows.

    ``ingested_at`` defaults to the event time (replaying history), or ``now`` when the time is
    unparseable; such rows are stored as received and stopped later by the validation gate.
    """
    now = utc_naive(now or dt.datetime.now(dt.UTC))
    rows = []
    for rec in records:
        raw_time = rec.get(S.EVENT_TIME)
        parsed = _parse_time(raw_time)
        event_type = _text(rec.get(S.EVENT_TYPE)) or default_event_type
        user, item = _text(rec.get(S.USER_ID)), _text(rec.get(S.ITEM_ID))
        event_time = parsed.isoformat() if parsed else _text(raw_time)
        ingested = _parse_time(rec.get(S.INGESTED_AT)) or parsed or now
        value = rec.get(S.VALUE)
        rows.append(
            {
                S.EVENT_ID: _text(rec.get(S.EVENT_ID))
                or event_id_for(user, item, event_type, event_time),
                S.USER_ID: user,
                S.ITEM_ID: item,
                S.EVENT_TYPE: event_type,
                S.EVENT_TIME: event_time,
                S.INGESTED_AT: ingested,
                S.VALUE: None if value is None or value != value else float(value),
                REQUEST_ID: _text(rec.get(REQUEST_ID)),
                KEY_ID: None,  # never from the input: the API sets the key it verified
            }
        )
    return rows


def _summary(store: EventStore, rows: list[dict[str, Any]], inserted: int) -> dict[str, Any]:
    times = [r[S.INGESTED_AT] for r in rows]
    return {
        "read": len(rows),
        "inserted": inserted,
        "duplicates": len(rows) - inserted,
        "rejected": 0,
        "rejects": None,
        "first_ingested_at": min(times).isoformat() if times else None,
        "last_ingested_at": max(times).isoformat() if times else None,
        "total_in_store": store.count(),
    }


def import_frame(store: EventStore, frame: pd.DataFrame, default_event_type: str = "view") -> dict:
    """Load a frame in the event schema into the store. Returns counts for the CLI summary.

    Meant for frames our own parsers built (MovieLens): rows are stored as given, none rejected.
    """
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    rows = prepare_rows(records, default_event_type=default_event_type)
    return _summary(store, rows, store.append(rows))
