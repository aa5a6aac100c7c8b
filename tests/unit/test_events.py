import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa

from recsys import schema as S
from recsys.data import event_readers, events, movielens
from tests.helpers.events import assert_history_reads_agree, history_cases


def test_prepare_rows_normalises_times_and_replays_ingestion():
    rows = events.prepare_rows(
        [
            {"user_id": 7, "item_id": 3.0, "event_time": 874724710, "value": 4},
            {"user_id": "u", "item_id": "i", "event_time": "2024-01-01T01:00:00+01:00"},
        ]
    )
    assert rows[0][S.USER_ID] == "7" and rows[0][S.ITEM_ID] == "3"
    assert rows[0][S.EVENT_TIME] == "1997-09-20T03:05:10"
    assert rows[0][S.INGESTED_AT] == dt.datetime(1997, 9, 20, 3, 5, 10)
    assert rows[1][S.EVENT_TIME] == "2024-01-01T00:00:00"
    assert rows[0][S.EVENT_ID] != rows[1][S.EVENT_ID]


def test_unparseable_time_is_kept_verbatim_and_ingested_now():
    now = dt.datetime(2024, 5, 1, 12)
    (row,) = events.prepare_rows([{"user_id": "u", "item_id": "i", "event_time": "soon"}], now=now)
    assert row[S.EVENT_TIME] == "soon"
    assert row[S.INGESTED_AT] == now


def test_append_is_idempotent_on_event_id(store_url):
    store = events.EventStore(store_url)
    rows = events.prepare_rows(
        [{"user_id": "u", "item_id": str(i), "event_time": i} for i in range(5)]
    )
    assert store.append(rows) == 5
    assert store.append(rows) == 0
    assert store.count() == 5


def test_read_interval_is_keyed_on_ingestion_time(store_url):
    store = events.EventStore(store_url)
    late = {
        "user_id": "u",
        "item_id": "late",
        "event_time": "2024-01-01T00:00:00",
        "ingested_at": "2024-01-03T10:00:00",
    }
    on_time = {"user_id": "u", "item_id": "a", "event_time": "2024-01-03T09:00:00"}
    store.append(events.prepare_rows([late, on_time]))
    frame = store.read_interval(dt.datetime(2024, 1, 3), dt.datetime(2024, 1, 4))
    assert sorted(frame[S.ITEM_ID]) == ["a", "late"]
    assert store.read_interval(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)).empty


def test_history_is_time_ordered_and_limited(store_url):
    store = events.EventStore(store_url)
    store.append(
        events.prepare_rows(
            [{"user_id": "u", "item_id": f"i{t}", "event_time": 1000 + t} for t in (3, 1, 2)]
        )
    )
    assert store.history("u") == ["i1", "i2", "i3"]
    assert store.history("u", limit=2) == ["i2", "i3"]
    assert store.history("nobody") == []


def test_the_history_read_agrees_with_its_sqlalchemy_statement(store_url, monkeypatch):
    store = events.EventStore(store_url)
    store.append(history_cases())
    assert store._history_sql is not None  # SQLite's qmark style is covered
    assert_history_reads_agree(store)
    for style in ("named", "numeric"):  # not covered: the statement itself is run
        assert events._history_sql(style) is None
    monkeypatch.setattr(store, "_history_sql", None)
    assert_history_reads_agree(store)


def test_history_is_read_from_the_covering_index_alone(tmp_path):
    store = events.EventStore(f"sqlite:///{tmp_path / 'e.db'}")
    sql = store._history_sql.replace("?", "'u'", 1).replace("?", "200")
    with store.engine.connect() as conn:
        plan = " ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "COVERING INDEX ix_events_user_history" in plan
    assert "TEMP B-TREE" not in plan  # already in the order asked


def test_a_store_from_an_older_release_gains_the_history_index(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    old = sa.MetaData()
    table = events.events_table.to_metadata(old)
    for index in list(table.indexes):
        table.indexes.discard(index)
    sa.Index("ix_events_user_time", table.c[S.USER_ID], table.c[S.EVENT_TIME])  # the old index
    old.create_all(engine)

    store = events.EventStore(url)  # migrates
    names = {ix["name"] for ix in sa.inspect(engine).get_indexes("events")}
    assert {"ix_events_user_history", "ix_events_user_time"} <= names
    assert events.add_missing_indexes(store.engine) == []  # idempotent
    store.append(events.prepare_rows([{"user_id": "u", "item_id": "a", "event_time": 1000}]))
    assert store.history("u") == ["a"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_read_event_file_formats(tmp_path, suffix):
    frame = pd.DataFrame(
        {"user_id": ["1"], "item_id": ["2"], "event_time": ["2024-01-01T00:00:00"]}
    )
    path = tmp_path / f"e{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".parquet": lambda: frame.to_parquet(path),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
    }[suffix]()
    read = event_readers.read_event_file(path)
    assert read[S.USER_ID].astype(str).tolist() == ["1"]


def test_read_event_file_names_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("user,item\n1,2\n")
    with pytest.raises(ValueError, match="missing required column.*user_id, item_id, event_time"):
        event_readers.read_event_file(path)


def test_read_event_file_rejects_unknown_type(tmp_path):
    with pytest.raises(ValueError, match="unsupported file type"):
        event_readers.read_event_file(tmp_path / "x.xlsx")


def test_import_frame_counts(store_url):
    store = events.EventStore(store_url)
    frame = pd.DataFrame(
        {"user_id": ["1", "1"], "item_id": ["2", "3"], "event_time": ["2024-01-01", "2024-01-02"]}
    )
    first = events.import_frame(store, frame)
    again = events.import_frame(store, frame)
    assert (first["inserted"], again["inserted"], again["duplicates"]) == (2, 0, 2)


def test_movielens_inter_and_udata_parse_to_the_same_events():
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n"
    udata = "196\t242\t3\t881250949\n"
    a, b = movielens.read_inter(inter), movielens.read_udata(udata)
    assert a == b
    assert a[0][S.EVENT_ID] == "ml100k-196-242-881250949" and a[0][S.VALUE] == 3.0


def test_movielens_rejects_a_foreign_header():
    with pytest.raises(ValueError, match="unexpected .inter header"):
        movielens.read_inter("a\tb\tc\td\n1\t2\t3\t4\n")


def test_a_sqlite_store_lets_readers_and_a_writer_work_at_once(tmp_path):
    """WAL mode: an open read transaction does not block an insert (the API reads histories
    while events are posted), and a writer waits for another writer instead of failing."""
    store = events.EventStore(f"sqlite:///{tmp_path / 'e.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == events.SQLITE_BUSY_MS
    row = {"user_id": "u", "item_id": "i", "event_time": "2024-01-01T00:00:00"}
    other = events.EventStore(store.url)
    with other.engine.connect() as reader:
        reader.exec_driver_sql("BEGIN")
        reader.exec_driver_sql("SELECT count(*) FROM events").scalar()  # holds a read snapshot
        assert store.append(events.prepare_rows([row])) == 1
        reader.rollback()
    assert other.count() == 1
