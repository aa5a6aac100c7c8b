"""The event store on each backend: SQLite (the embedded default) and PostgreSQL (production)."""

import datetime as dt

import sqlalchemy as sa

from recsys import schema as S
from recsys.data import events, synthetic
from tests.helpers.events import assert_history_reads_agree, history_cases


def test_the_store_appends_idempotently_and_reads_intervals_and_histories(store_url):
    store = events.EventStore(store_url)
    rows = events.prepare_rows(synthetic.generate(n_users=10, n_items=20, days=2))
    assert store.append(rows) == len(rows)
    assert store.append(rows) == 0  # idempotent on event_id (ON CONFLICT DO NOTHING)
    day = store.read_interval(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2))
    expected = [r for r in rows if r["ingested_at"] < dt.datetime(2024, 1, 2)]
    assert sorted(day["event_id"]) == sorted(r["event_id"] for r in expected)
    history = store.history("u1", limit=1000)
    assert history == [
        r["item_id"]
        for r in sorted(
            (r for r in rows if r["user_id"] == "u1"),
            key=lambda r: (r["event_time"], r["event_id"]),
        )
    ]
    store.engine.dispose()


def test_the_history_read_agrees_with_its_sqlalchemy_statement(store_url):
    store = events.EventStore(store_url)
    store.append(history_cases())
    assert store._history_sql is not None
    assert_history_reads_agree(store)
    store.engine.dispose()


def _rows(*ids: str) -> list[dict]:
    return events.prepare_rows(
        [{"event_id": i, "user_id": "u", "item_id": "i", "event_time": 1_700_000_000} for i in ids]
    )


def test_append_one_says_whether_the_event_is_new(store_url):
    """psycopg reports a rowcount of -1 for ``INSERT ... ON CONFLICT DO NOTHING``: the answer
    must come from the row the insert returns, or POST /events calls every new event a duplicate."""
    store = events.EventStore(store_url)
    (row,) = _rows("e1")
    assert store.append_one(row) is True
    assert store.append_one(row) is False
    assert store.count() == 1
    store.engine.dispose()


def test_append_counts_its_own_new_rows_while_another_writer_writes(store_url):
    """Counting the table before and after an append also counts what others wrote meanwhile."""
    store = events.EventStore(store_url)
    store.append(_rows("old"))
    other = events.EventStore(store_url)
    written = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def another_writer(conn, cursor, statement, parameters, context, executemany):
        # Just before the append's INSERT runs (SQLite takes its write lock in that statement).
        if not written and statement.lstrip().upper().startswith("INSERT"):
            written.append(other.append_one(_rows("theirs")[0]))

    assert store.append(_rows("old", "new1", "new2")) == 2
    assert written == [True] and store.count() == 4
    ids = set(store.read_interval(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))[S.EVENT_ID])
    assert ids == {"old", "new1", "new2", "theirs"}
    store.engine.dispose()
    other.engine.dispose()
