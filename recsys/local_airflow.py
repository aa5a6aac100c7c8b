"""An embedded Airflow whose whole state lives under ``RECSYS_HOME``: its environment, the processes
it runs (api-server, scheduler, dag-processor), backfills, and a read-only look at its metadata DB.
``recsys demo`` drives it; so do the tests that run the real scheduler.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from recsys.config import Settings

ENV_DAGS_FOLDER = "RECSYS_DAGS_FOLDER"


def dags_folder() -> Path:
    return Path(os.environ.get(ENV_DAGS_FOLDER, Path(__file__).resolve().parents[1] / "dags"))


def airflow_env(settings: Settings, port: int) -> dict[str, str]:
    """Environment for an embedded Airflow whose whole state lives under ``RECSYS_HOME``."""
    airflow_home = settings.home / "airflow"
    db_url = f"sqlite:///{airflow_home / 'airflow.db'}?timeout=60"
    env = dict(os.environ)
    env.update(settings.as_env())
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            # SQLite allows one writer at a time: wait for the lock, don't fail after 5 s.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            # The embedded demo only: every UI visitor is an admin. Production uses real auth.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "GIT_PYTHON_REFRESH": "quiet",
        }
    )
    return env


@dataclass
class Processes:
    """The processes the demo started: restarted if they die (like a supervisor would, at most
    ``MAX_RESTARTS`` times each), and all ended by ``stop()``."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    MAX_RESTARTS = 3

    def start(self, name: str, *cmd: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        self.commands[name] = cmd
        self.procs[name] = subprocess.Popen(
            list(cmd), env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def check(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            log_file = self.logs / f"{name}.log"
            if self.restarts.get(name, 0) >= self.MAX_RESTARTS:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_file}")
            self.restarts[name] = self.restarts.get(name, 0) + 1
            print(f"    {name} exited with {proc.returncode} (see {log_file}); restarting it")
            self.start(name, *self.commands[name])

    def stop(self, *names: str) -> None:
        """Stop the named processes (all by default): SIGTERM, then SIGKILL after 20 s."""
        chosen = {n: p for n, p in self.procs.items() if not names or n in names}
        for proc in chosen.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 20
        for name, proc in chosen.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            del self.procs[name]


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run_airflow(env: dict[str, str], *args: str, attempts: int = 3) -> str:
    for attempt in range(1, attempts + 1):
        done = subprocess.run([bin_path("airflow"), *args], env=env, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout
        if "database is locked" not in done.stderr or attempt == attempts:
            break
        time.sleep(2 * attempt)  # SQLite was busy with the scheduler: try again
    raise RuntimeError(f"`airflow {' '.join(args)}` failed:\n{done.stderr[-2000:]}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _json(request: urllib.request.Request, timeout: float, tries: int = 5) -> Any:
    """The response's JSON. A 429 (a key's rate limit) is waited out as its ``Retry-After``
    says, as a well-behaved client does, ``tries`` times at most."""
    for attempt in range(1, tries + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            if err.code != 429 or attempt == tries:
                raise
            time.sleep(min(float(err.headers.get("Retry-After") or 1), 10.0))
    raise AssertionError("unreachable")


def get_json(url: str, timeout: float = 5.0, key: str | None = None) -> Any:
    """GET ``url``'s JSON, sending ``key`` as a Bearer token when given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return _json(urllib.request.Request(url, headers=headers), timeout)


def post_json(url: str, body: dict[str, Any], timeout: float = 5.0, key: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    return _json(request, timeout)


def wait_for(what: str, check: Any, timeout: float, services: Processes, every: float = 2.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        services.check()
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            result = check()
            if result:
                return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class AirflowDB:
    """Read-only look at the Airflow metadata DB, to wait for runs without CLI start-up costs."""

    def __init__(self, url: str) -> None:
        """``url``: SQLAlchemy URL of the metadata DB (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``)."""
        import sqlalchemy as sa

        self.sa = sa
        self.engine = sa.create_engine(url)

    def runs(self, dag_id: str) -> list[tuple[str, str, str]]:
        q = self.sa.text(
            "SELECT run_id, run_type, state FROM dag_run WHERE dag_id = :d ORDER BY id"
        )
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(q, {"d": dag_id})]

    def last_backfill(self) -> tuple[int, Any] | None:
        q = self.sa.text("SELECT id, completed_at FROM backfill ORDER BY id DESC LIMIT 1")
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else (row[0], row[1])

    def backfill_done(self, backfill_id: int) -> bool:
        """Every run of the backfill has finished (or the scheduler marked it complete).

        The scheduler's own check (the same condition: runs associated and none queued or
        running) runs only every 30 s; asking the DB directly saves that wait per backfill.
        """
        q = self.sa.text(
            "SELECT b.completed_at IS NOT NULL OR ("
            " EXISTS (SELECT 1 FROM backfill_dag_run a WHERE a.backfill_id = b.id)"
            " AND NOT EXISTS (SELECT 1 FROM dag_run r WHERE r.backfill_id = b.id"
            " AND r.state IN ('queued', 'running'))"
            ") FROM backfill b WHERE b.id = :i"
        )
        with self.engine.connect() as conn:
            return bool(conn.execute(q, {"i": backfill_id}).scalar())

    def idle(self) -> bool:
        """No run queued or running and no Asset event waiting to trigger a run."""
        with self.engine.connect() as conn:
            active = conn.execute(
                self.sa.text("SELECT count(*) FROM dag_run WHERE state IN ('queued', 'running')")
            ).scalar()
            pending = conn.execute(
                self.sa.text(
                    "SELECT count(*) FROM asset_dag_run_queue q JOIN dag d "
                    "ON q.target_dag_id = d.dag_id WHERE NOT d.is_paused"
                )
            ).scalar()
        return active == 0 and pending == 0


def summarise_runs(db: AirflowDB, dag_id: str) -> str:
    states: dict[str, int] = {}
    for _, _, state in db.runs(dag_id):
        states[state] = states.get(state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no runs"


def backfill_args(
    start: date, end: date, max_active_runs: int, reprocess: str = "failed"
) -> tuple[str, ...]:
    """The ``airflow`` arguments that create a backfill of ``recsys_ingest`` over [start, end].

    Its features depend on their past, and Airflow then requires a reprocess behavior: ``failed``
    (the default here) re-runs only failed intervals, ``completed`` every existing one."""
    return (
        "backfill",
        "create",
        "--dag-id",
        "recsys_ingest",
        "--from-date",
        start.isoformat(),
        "--to-date",
        end.isoformat(),
        "--max-active-runs",
        str(max_active_runs),
        "--reprocess-behavior",
        reprocess,
    )


def backfill(
    env: dict[str, str],
    db: AirflowDB,
    services: Processes,
    start: date,
    end: date,
    max_active_runs: int,
    timeout: float,
    reprocess: str = "failed",
) -> None:
    """``airflow backfill create`` for ``recsys_ingest``, then wait until its runs finished.

    SQLite has a single writer: the backfill is created while the scheduler is stopped, so the
    two never fight over the lock (on PostgreSQL this dance is unnecessary).
    """
    before = db.last_backfill()
    scheduler = services.commands.get("scheduler")
    if scheduler and before is not None and before[1] is None:
        # One running backfill per DAG, and only the scheduler marks one complete (every 30 s):
        # let it mark the previous one before it stops, or the new one is refused.
        wait_for(
            "the scheduler to mark the previous backfill complete",
            lambda: db.last_backfill()[1] is not None,
            timeout,
            services,
        )
        before = db.last_backfill()
    if scheduler:
        services.stop("scheduler")
    try:
        run_airflow(env, *backfill_args(start, end, max_active_runs, reprocess))
    except RuntimeError as err:
        # An attempt that hit "database is locked" after committing the backfill makes the retry
        # fail with AlreadyRunningBackfill: that backfill is ours, and it exists.
        if "AlreadyRunningBackfill" not in str(err) or db.last_backfill() == before:
            raise
    services.start("scheduler", *(scheduler or (bin_path("airflow"), "scheduler")))
    created = db.last_backfill()
    if created is None or created == before:
        raise RuntimeError(f"airflow created no backfill for {start}..{end}")

    wait_for(
        "the backfill", lambda: db.backfill_done(created[0]) and db.idle(), timeout, services, 3
    )
