"""The event store on PostgreSQL, the production backend (runs under CI=true, never skipped)."""

import datetime as dt

import pytest

from recsys.data import events, synthetic
from tests.helpers.events import assert_history_reads_agree, history_cases

pytestmark = pytest.mark.postgres


def test_event_store_on_postgres(postgres_url):
    store = events.EventStore(postgres_url)
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


def test_the_history_read_agrees_with_its_sqlalchemy_statement_on_postgres(postgres_url):
    store = events.EventStore(postgres_url)
    store.append(history_cases())
    assert store._history_sql is not None and "%s" in store._history_sql
    assert_history_reads_agree(store)
    store.engine.dispose()
