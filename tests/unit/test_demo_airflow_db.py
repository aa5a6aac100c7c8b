"""`recsys.local_airflow.AirflowDB`: the demo's read-only view of the Airflow metadata DB, on
tables with the columns it reads (the real schema: tests/integration/test_demo.py)."""

import sqlalchemy as sa

from recsys.local_airflow import AirflowDB

SCHEMA = [
    "CREATE TABLE backfill (id INTEGER PRIMARY KEY, completed_at TIMESTAMP)",
    "CREATE TABLE backfill_dag_run (id INTEGER PRIMARY KEY, backfill_id INTEGER NOT NULL,"
    " dag_run_id INTEGER)",
    "CREATE TABLE dag_run (id INTEGER PRIMARY KEY, dag_id TEXT, run_id TEXT, run_type TEXT,"
    " state TEXT, backfill_id INTEGER)",
]


def _db(tmp_path) -> AirflowDB:
    db = AirflowDB(f"sqlite:///{tmp_path / 'airflow.db'}")
    with db.engine.begin() as conn:
        for stmt in SCHEMA:
            conn.execute(sa.text(stmt))
    return db


def _exec(db: AirflowDB, stmt: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(stmt))


def test_a_backfill_is_done_once_none_of_its_runs_is_queued_or_running(tmp_path):
    db = _db(tmp_path)
    _exec(db, "INSERT INTO backfill (id) VALUES (1)")
    assert not db.backfill_done(1)  # still being set up: no runs associated yet

    _exec(db, "INSERT INTO backfill_dag_run (backfill_id, dag_run_id) VALUES (1, 10), (1, 11)")
    _exec(
        db,
        "INSERT INTO dag_run (id, dag_id, state, backfill_id) VALUES"
        " (10, 'd', 'queued', 1), (11, 'd', 'running', 1), (12, 'd', 'running', NULL)",
    )
    assert not db.backfill_done(1)
    _exec(db, "UPDATE dag_run SET state = 'success' WHERE id = 10")
    assert not db.backfill_done(1)  # one run left
    _exec(db, "UPDATE dag_run SET state = 'failed' WHERE id = 11")
    assert db.backfill_done(1)  # a run outside the backfill does not hold it up
    assert db.last_backfill() == (1, None)  # before the scheduler's own 30 s sweep marks it


def test_a_backfill_the_scheduler_marked_complete_is_done(tmp_path):
    db = _db(tmp_path)
    _exec(db, "INSERT INTO backfill (id, completed_at) VALUES (2, '2024-01-01 00:00:00')")
    assert db.backfill_done(2)
    assert not db.backfill_done(3)  # no such backfill
