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


class _Processes:
    """The scheduler as ``backfill`` sees it: started, stopped, never dead."""

    def __init__(self) -> None:
        self.commands = {"scheduler": ("airflow", "scheduler")}
        self.log: list[str] = []

    def check(self) -> None:
        pass

    def stop(self, *names: str) -> None:
        self.log += [f"stop {n}" for n in names]

    def start(self, name: str, *cmd: str) -> None:
        self.log.append(f"start {name}")


def test_a_backfill_waits_for_the_scheduler_to_complete_the_one_before(tmp_path, monkeypatch):
    """Airflow refuses a second running backfill of a DAG, and only the scheduler marks one
    complete: the scheduler must not be stopped while the previous backfill is unmarked."""
    import datetime as dt

    from recsys import local_airflow

    db = _db(tmp_path)
    _exec(db, "INSERT INTO backfill (id, completed_at) VALUES (1, NULL)")
    procs = _Processes()
    polls = []

    def scheduler_marks_it_later() -> tuple[int, object] | None:
        polls.append(1)
        if len(polls) == 3:  # the scheduler's periodic check comes around
            _exec(db, "UPDATE backfill SET completed_at = '2026-12-04 12:00:00' WHERE id = 1")
        return real_last()

    real_last = db.last_backfill
    monkeypatch.setattr(db, "last_backfill", scheduler_marks_it_later)

    def airflow(env, *args, attempts=3):
        row = real_last()
        if row[1] is None:  # what Airflow itself checks before it creates a backfill
            raise RuntimeError("AlreadyRunningBackfill: another backfill is running")
        procs.log.append("backfill create")
        _exec(db, "INSERT INTO backfill (id, completed_at) VALUES (2, NULL)")
        _exec(db, "INSERT INTO backfill_dag_run (backfill_id, dag_run_id) VALUES (2, 1)")
        _exec(db, "INSERT INTO dag_run (id, state, backfill_id) VALUES (1, 'success', 2)")
        return ""

    monkeypatch.setattr(local_airflow, "run_airflow", airflow)
    monkeypatch.setattr(db, "idle", lambda: True)
    monkeypatch.setattr(local_airflow.time, "sleep", lambda s: None)
    day = dt.date(2024, 1, 1)
    local_airflow.backfill({}, db, procs, day, day, max_active_runs=1, timeout=60)
    assert procs.log == ["stop scheduler", "backfill create", "start scheduler"]
    assert len(polls) >= 3
