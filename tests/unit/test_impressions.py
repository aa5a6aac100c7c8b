"""Impressions: the click join and CTR per model version (pure), the background writer, the
CTR read from a store, and the additive ``request_id`` column on old event stores."""

import datetime as dt
import time

import pytest
import sqlalchemy as sa

from recsys.data import events
from recsys.data.impressions import (
    ATTRIBUTION,
    Click,
    Impression,
    ImpressionLog,
    attribute,
    ctr_by_version,
    ctr_of,
    impressions_table,
    read,
)
from tests.helpers.events import vouched

T0 = dt.datetime(2024, 3, 1, 12)


def imp(rid, version="1", items=("a", "b", "c"), minutes=0, cold=False, user="u", arm=None):
    at = T0 + dt.timedelta(minutes=minutes)
    return Impression(rid, user, version, tuple(items), at, cold, arm)


def click(rid, item, minutes=1):
    return Click(rid, item, T0 + dt.timedelta(minutes=minutes))


def test_a_click_is_attributed_to_the_list_it_answers_once():
    shown = [imp("r1"), imp("r2", items=("x",))]
    joined = attribute(
        shown,
        [
            click("r1", "b"),
            click("r1", "b", minutes=2),  # the same item again: counted once
            click("r1", "z"),  # not in the list
            click("r9", "a"),  # no such impression
            click("r2", "x", minutes=61),  # after the attribution window
            click("r2", "x", minutes=-5),  # before the list was served (beyond clock skew)
        ],
    )
    assert [(i.request_id, c.item_id) for i, c in joined] == [("r1", "b")]


def test_ctr_by_version_counts_lists_with_a_click():
    shown = [imp("a1"), imp("a2"), imp("a3"), imp("a4"), imp("b1", "2"), imp("c1", cold=True)]
    clicks = [click("a1", "a"), click("a1", "c"), click("a3", "b"), click("b1", "a")]
    clicks.append(click("c1", "a"))  # a cold-start list: not the model's doing
    ctr = ctr_of(shown, clicks)
    assert list(ctr) == ["1", "2"]
    assert (ctr["1"].impressions, ctr["1"].clicked, ctr["1"].clicks) == (4, 2, 3)
    assert ctr["1"].ctr == pytest.approx(0.5) and ctr["2"].ctr == 1.0
    with_cold = ctr_of(shown, clicks, include_cold=True)
    assert with_cold["1"].impressions == 5 and with_cold["1"].clicked == 3


def test_no_impressions_no_ctr_and_versions_sort_numerically():
    assert ctr_of([], [click("r", "a")]) == {}
    assert list(ctr_of([imp("x", "10"), imp("y", "9")], [])) == ["9", "10"]
    assert ctr_of([imp("x")], [])["1"].as_dict() == {
        "model_version": "1",
        "impressions": 1,
        "clicked": 0,
        "clicks": 0,
        "ctr": 0.0,
    }


def test_the_writer_flushes_on_close_and_drops_when_full(tmp_path, store_url):
    engine = sa.create_engine(store_url)
    log = ImpressionLog(engine, capacity=3)
    for n in range(4):  # not started yet: the fourth does not fit
        log.log(imp(f"r{n}", minutes=n))
    assert log.dropped == 1 and log.queued == 3
    log.start()
    assert log.flush(10)
    log.log(imp("r9", minutes=9))
    log.close()
    assert log.written == 4 and log.queued == 0
    got = read(engine, T0, T0 + dt.timedelta(hours=1))
    assert [i.request_id for i in got] == ["r0", "r1", "r2", "r9"]
    assert got[0] == imp("r0")  # items, times and flags survive the round trip
    log.write([imp("r0")])  # a retried write of a known request id is ignored
    assert len(read(engine, T0, T0 + dt.timedelta(hours=1))) == 4


def test_a_row_fills_every_column_and_reads_back_the_same(tmp_path, store_url):
    engine = sa.create_engine(store_url)
    anonymous_cold = imp("r1", version="7", items=("x", "y"), cold=True, user=None)
    assert set(anonymous_cold.row()) == {c.name for c in impressions_table.columns}
    ImpressionLog(engine).write([anonymous_cold, imp("r2")])
    assert read(engine, T0, T0 + dt.timedelta(hours=1)) == [anonymous_cold, imp("r2")]


def test_a_failed_write_is_counted_and_the_writer_goes_on(tmp_path, store_url):
    engine = sa.create_engine(store_url)
    log = ImpressionLog(engine)
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError("disk full")

    log.write = flaky
    log.start()
    log.log(imp("r1"))
    assert log.flush(10)
    log.log(imp("r2"))
    log.close()
    assert (log.failed, log.written) == (1, 1)


def test_ctr_by_version_reads_impressions_and_clicks_from_the_store(tmp_path, store_url):
    url = store_url
    store = events.EventStore(url)
    log = ImpressionLog(store.engine)
    log.write([imp("r1"), imp("r2"), imp("r3", "2"), imp("late", minutes=24 * 60)])

    def posted(rid, item, minutes, event_type="click"):
        at = T0 + dt.timedelta(minutes=minutes)
        rec = {"user_id": "u", "item_id": item, "event_type": event_type, "event_time": at}
        return {**rec, "ingested_at": at, "request_id": rid}

    store.append(
        vouched(
            [
                posted("r1", "a", 2),
                posted("r2", "a", 3, event_type="view"),  # a view is not a click
                posted("r3", "c", 59),
                posted(None, "a", 4),  # a click without a request id: organic
            ]
        )
    )
    # Imported, or posted to a server without keys: nobody vouched for it, it never counts.
    store.append(events.prepare_rows([{**posted("r2", "b", 5), "event_id": "unvouched"}]))
    ctr = ctr_by_version(url, T0, T0 + dt.timedelta(hours=1))
    assert ctr == {
        "1": {"model_version": "1", "impressions": 2, "clicked": 1, "clicks": 1, "ctr": 0.5},
        "2": {"model_version": "2", "impressions": 1, "clicked": 1, "clicks": 1, "ctr": 1.0},
    }
    assert ATTRIBUTION == dt.timedelta(hours=1)


def test_an_impressions_table_from_before_ab_tests_gains_the_arm_column(tmp_path, store_url):
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # the table as the previous release created it
        conn.execute(
            sa.text(
                "CREATE TABLE impressions (request_id VARCHAR(64) PRIMARY KEY, user_id "
                "VARCHAR(128), model_version VARCHAR(32) NOT NULL, items TEXT NOT NULL, "
                "cold_start BOOLEAN NOT NULL, served_at TIMESTAMP NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO impressions VALUES ('old', 'u', '1', '[\"a\"]', FALSE, "
                "'2024-03-01 11:00:00')"
            )
        )
    log = ImpressionLog(engine)  # migrates
    assert "arm" in {c["name"] for c in sa.inspect(engine).get_columns("impressions")}
    log.write([imp("r-ab", version="2", arm="candidate")])
    got = {
        i.request_id: i.arm
        for i in read(engine, T0 - dt.timedelta(days=1), T0 + dt.timedelta(hours=1))
    }
    assert got == {"old": None, "r-ab": "candidate"}


def test_an_event_store_from_before_request_ids_gains_the_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the table as the previous release created it
        conn.execute(
            sa.text(
                "CREATE TABLE events (event_id VARCHAR(128) PRIMARY KEY, user_id VARCHAR(128), "
                "item_id VARCHAR(128), event_type VARCHAR(32), event_time VARCHAR(64), "
                "ingested_at DATETIME NOT NULL, value FLOAT)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO events VALUES ('old-1', 'u', 'a', 'view', '2024-01-01T00:00:00', "
                "'2024-01-01 00:00:00', NULL)"
            )
        )
    store = events.EventStore(url)  # migrates
    columns = {c["name"] for c in sa.inspect(engine).get_columns("events")}
    assert events.REQUEST_ID in columns
    assert events.add_missing_columns(store.engine) == []  # idempotent
    rows = events.prepare_rows(
        [{"user_id": "u", "item_id": "b", "event_time": "2024-01-02", "request_id": "r1"}]
    )
    assert store.append(rows) == 1
    assert store.history("u") == ["a", "b"]  # the old row reads as before
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT event_id, request_id FROM events ORDER BY 1")).all()
    assert [tuple(r) for r in got] == [(rows[0]["event_id"], "r1"), ("old-1", None)]
    frame = store.read_interval(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3))
    assert events.REQUEST_ID not in frame.columns  # the lake's schema is unchanged


def test_the_writer_gathers_a_batch_before_it_commits(tmp_path, store_url):
    log = ImpressionLog(sa.create_engine(store_url), linger_s=0.5)
    batches = []
    log.write = lambda batch: batches.append(len(batch))
    log.start()
    for n in range(3):
        log.log(imp(f"r{n}"))
    time.sleep(0.1)
    assert batches == []  # still lingering
    log.close()
    assert batches == [3] and log.written == 3


def test_the_writer_wakes_by_itself_after_the_linger_and_at_a_full_batch(
    tmp_path, store_url, monkeypatch
):
    monkeypatch.setattr("recsys.data.impressions.WRITE_BATCH", 4)
    log = ImpressionLog(sa.create_engine(store_url), linger_s=0.2)
    batches = []
    log.write = lambda batch: batches.append(len(batch))
    log.start()
    log.log(imp("r0"))  # wakes the idle writer, which then lingers
    deadline = time.monotonic() + 5
    while not batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batches == [1]  # written with no flush: the linger ran out
    log.linger_s = 30.0
    log.log(imp("r1"))
    time.sleep(0.1)  # the writer now waits for a batch, up to 30 s
    for n in range(2, 5):
        log.log(imp(f"r{n}"))  # the fourth fills the batch
    deadline = time.monotonic() + 5
    while len(batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batches == [1, 4]
    log.close()


def test_collect_ctr_writes_the_interval_and_rewrites_the_one_before_final(tmp_path, store_url):
    import json

    from recsys.data.impressions import collect_ctr, ctr_path
    from recsys.data.lake import Interval

    url = store_url
    store = events.EventStore(url)
    ImpressionLog(store.engine).write([imp("r1"), imp("r2", "2", minutes=24 * 60)])  # day 1, 2
    at = T0 + dt.timedelta(minutes=5)
    row = {"user_id": "u", "item_id": "a", "event_type": "click", "event_time": at}
    store.append(vouched([{**row, "ingested_at": at, "request_id": "r1"}]))
    day1 = Interval(dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 2))
    day2 = Interval(dt.datetime(2024, 3, 2), dt.datetime(2024, 3, 3))
    lake = tmp_path / "lake"

    first = collect_ctr(url, lake, day1, now=dt.datetime(2024, 3, 2, 0, 30))
    assert [r["final"] for r in first] == [True, False]  # the day before; day 1 not yet settled
    on_disk = json.loads(ctr_path(lake, day1).read_text())
    assert on_disk["final"] is False
    assert on_disk["versions"]["1"]["clicked"] == 1 and on_disk["versions"]["1"]["ctr"] == 1.0

    second = collect_ctr(url, lake, day2, now=dt.datetime(2024, 3, 3, 0, 30))
    assert [r["interval"]["start"][:10] for r in second] == ["2024-03-01", "2024-03-02"]
    assert json.loads(ctr_path(lake, day1).read_text())["final"] is True  # rewritten, settled
    assert json.loads(ctr_path(lake, day2).read_text())["versions"]["2"]["ctr"] == 0.0
