"""``recsys demo``: the whole loop on MovieLens-100K, driven by the real Airflow scheduler.

1. import MovieLens-100K into the event store (original timestamps replayed as ingestion times);
2. start Airflow (api-server, scheduler, dag-processor; LocalExecutor on SQLite) under RECSYS_HOME;
3. ``airflow backfill create`` recsys_ingest over the first weeks;
4. unpause recsys_full_retrain: its weekly run trains the first champion;
5. unpause recsys_incremental_finetune and backfill a few more days: each run updates the features
   Asset, which triggers a fine-tune;
6. print the registry, start the API, ask it for recommendations; stop everything it started.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from recsys.config import TRAINING_POOL, Settings
from recsys.data.lake import Interval

log = logging.getLogger(__name__)

MOVIELENS_START = date(1997, 9, 20)
SYNTHETIC_START = date(2024, 1, 1)
DAGS = ("recsys_ingest", "recsys_full_retrain", "recsys_incremental_finetune")
MARKER = ".recsys-demo"
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
class Services:
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


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _airflow(env: dict[str, str], *args: str, attempts: int = 3) -> str:
    for attempt in range(1, attempts + 1):
        done = subprocess.run([_bin("airflow"), *args], env=env, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout
        if "database is locked" not in done.stderr or attempt == attempts:
            break
        time.sleep(2 * attempt)  # SQLite was busy with the scheduler: try again
    raise RuntimeError(f"`airflow {' '.join(args)}` failed:\n{done.stderr[-2000:]}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict[str, Any], timeout: float = 5.0) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait(what: str, check: Any, timeout: float, services: Services, every: float = 2.0) -> Any:
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


def _snapshot_hashes(settings: Settings, intervals: list[Any]) -> list[str]:
    from recsys.data.features import INTERACTIONS
    from recsys.data.lake import Lake, file_sha256

    lake = Lake(settings.lake_root)
    return [file_sha256(lake.snapshot(iv) / INTERACTIONS) for iv in intervals]


def _say(t0: float, msg: str) -> None:
    print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)


def _prepare_home(settings: Settings, reset: bool) -> None:
    home = settings.home
    if home.exists() and any(home.iterdir()):
        if not reset:
            raise ValueError(
                f"{home} already holds state; rerun with --reset to start the demo over"
            )
        if not (home / MARKER).exists():
            raise ValueError(f"{home} was not created by the demo; refusing to delete it")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by `recsys demo`; `recsys demo --reset` may delete it\n")


def _summarise_runs(db: AirflowDB, dag_id: str) -> str:
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


def _backfill(
    env: dict[str, str],
    db: AirflowDB,
    services: Services,
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
    if scheduler:
        services.stop("scheduler")
    try:
        _airflow(env, *backfill_args(start, end, max_active_runs, reprocess))
    except RuntimeError as err:
        # An attempt that hit "database is locked" after committing the backfill makes the retry
        # fail with AlreadyRunningBackfill: that backfill is ours, and it exists.
        if "AlreadyRunningBackfill" not in str(err) or db.last_backfill() == before:
            raise
    services.start("scheduler", *(scheduler or (_bin("airflow"), "scheduler")))
    created = db.last_backfill()
    if created is None or created == before:
        raise RuntimeError(f"airflow created no backfill for {start}..{end}")

    _wait("the backfill", lambda: db.backfill_done(created[0]) and db.idle(), timeout, services, 3)


@dataclass(frozen=True)
class Plan:
    """What the demo replays: MovieLens-100K (default) or a small synthetic stream (for tests)."""

    synthetic: bool = False
    weeks: int = 6  # backfilled before the first full retrain
    days: int = 3  # backfilled after it, one fine-tune trigger per run
    api_port: int = 8000
    airflow_port: int = 8080

    @property
    def start(self) -> date:
        return SYNTHETIC_START if self.synthetic else MOVIELENS_START


def run(settings: Settings, plan: Plan, reset: bool = False) -> None:
    t0 = time.time()
    for port in (plan.api_port, plan.airflow_port):
        if not _port_free(port):
            raise ValueError(f"port {port} is in use; pick another with --port/--airflow-port")
    if plan.weeks < 1 or plan.days < 1:
        raise ValueError("--weeks and --days must be at least 1")
    _prepare_home(settings, reset)
    env = airflow_env(settings, plan.airflow_port)
    services = Services(env, settings.home / "logs")
    try:
        _loop(settings, env, services, t0, plan)
    finally:
        services.stop()
        _say(t0, "stopped every process the demo started")


def _import_events(settings: Settings, env: dict[str, str], plan: Plan) -> str:
    """Load the demo's events through the same CLI a user would use; returns its summary."""
    if plan.synthetic:
        import pandas as pd

        from recsys.data import synthetic

        start = dt.datetime.combine(plan.start, dt.time())
        records = synthetic.generate(
            n_users=150, n_items=100, start=start, days=7 * plan.weeks + plan.days
        )
        path = settings.home / "downloads" / "synthetic.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records).to_json(path, orient="records", lines=True)
        source = ["--file", str(path)]
    else:
        source = ["--movielens-100k"]
    done = subprocess.run(
        [_bin("recsys"), "events", "import", *source],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"importing the demo's events failed: {done.stderr[-1000:]}")
    return done.stdout.strip().splitlines()[0]


def _loop(
    settings: Settings, env: dict[str, str], services: Services, t0: float, plan: Plan
) -> None:
    from recsys.registry.listing import format_registry, registry_rows

    api_port, airflow_port = plan.api_port, plan.airflow_port
    _say(t0, f"state folder: {settings.home}")
    _say(t0, _import_events(settings, env, plan))

    _airflow(env, "db", "migrate")
    _airflow(env, "dags", "reserialize")
    _airflow(env, "pools", "set", TRAINING_POOL, "1", "one training or promotion at a time")
    _say(t0, "Airflow metadata DB ready; starting api-server and dag-processor")
    services.start(
        "api-server",
        _bin("airflow"),
        "api-server",
        "--port",
        str(airflow_port),
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
    )
    services.start("dag-processor", _bin("airflow"), "dag-processor")
    _wait(
        "the Airflow api-server",
        lambda: _get(f"http://127.0.0.1:{airflow_port}/api/v2/monitor/health"),
        120,
        services,
    )
    db = AirflowDB(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    _airflow(env, "dags", "unpause", "recsys_ingest")

    first_end = plan.start + timedelta(days=7 * plan.weeks - 1)
    _say(t0, " ".join(("airflow", *backfill_args(plan.start, first_end, max_active_runs=2))))
    _backfill(env, db, services, plan.start, first_end, max_active_runs=2, timeout=420)
    _say(t0, f"recsys_ingest: {_summarise_runs(db, 'recsys_ingest')}")

    _say(t0, "unpausing recsys_full_retrain: the scheduler starts its weekly full retrain")
    _airflow(env, "dags", "unpause", "recsys_full_retrain")
    _wait("the full retrain", lambda: db.runs("recsys_full_retrain") and db.idle(), 400, services)
    _say(t0, f"recsys_full_retrain: {_summarise_runs(db, 'recsys_full_retrain')}")
    # Fine-tuning needs a champion to start from; until now it would only have skipped.
    _airflow(env, "dags", "unpause", "recsys_incremental_finetune")

    second_start = first_end + timedelta(days=1)
    second_end = first_end + timedelta(days=plan.days)
    _say(
        t0,
        " ".join(("airflow", *backfill_args(second_start, second_end, max_active_runs=1)))
        + "  (each run updates the features Asset, which triggers a fine-tune; Asset events "
        "that arrive while one runs are merged into the next)",
    )
    _backfill(env, db, services, second_start, second_end, max_active_runs=1, timeout=420)
    _say(t0, f"recsys_incremental_finetune: {_summarise_runs(db, 'recsys_incremental_finetune')}")

    replay = [
        Interval.parse(str(plan.start + timedelta(days=d)), str(plan.start + timedelta(days=d + 1)))
        for d in range(2)
    ]
    before = _snapshot_hashes(settings, replay)
    replay_args = backfill_args(plan.start, replay[-1].start.date(), 1, reprocess="completed")
    _say(t0, " ".join(("airflow", *replay_args)) + "  (already collected)")
    _backfill(
        env,
        db,
        services,
        plan.start,
        replay[-1].start.date(),
        max_active_runs=1,
        timeout=300,
        reprocess="completed",
    )
    same = before == _snapshot_hashes(settings, replay)
    _say(t0, f"features of the re-run intervals byte-identical: {'yes' if same else 'NO'}")

    print("\nModel registry (MLflow):")
    print("\n".join(format_registry(registry_rows(settings))))

    services.start(
        "recsys-serve", _bin("recsys"), "serve", "--port", str(api_port), "--poll-seconds", "5"
    )
    api = f"http://127.0.0.1:{api_port}"
    _wait(
        "the recommendation API",
        lambda: _get(f"{api}/health")["model_version"],
        120,
        services,
    )
    user = "u1" if plan.synthetic else "1"
    recs = _get(f"{api}/recommendations/{user}?k=10")
    print(f"\nGET {api}/recommendations/{user}?k=10  (model version {recs['model_version']})")
    print("  " + ", ".join(r["item_id"] for r in recs["items"]))
    clicked = recs["items"][0]["item_id"]
    _post(f"{api}/events", {"user_id": user, "item_id": clicked, "event_type": "click"})
    recs = _get(f"{api}/recommendations/{user}?k=10")
    print(f"POST {api}/events  (user {user} clicks item {clicked}), then the same GET:")
    print("  " + ", ".join(r["item_id"] for r in recs["items"]))

    bin_dir = Path(sys.executable).parent
    home = settings.home
    print(f"\n[{time.time() - t0:.0f}s] the loop ran end to end. Look at it with:")
    print(
        f"  Airflow UI: AIRFLOW_HOME={home / 'airflow'} "
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True "
        f"{bin_dir / 'airflow'} api-server --port 8080   -> http://127.0.0.1:8080"
    )
    print(
        f"  MLflow UI:  {bin_dir / 'mlflow'} ui --backend-store-uri {settings.tracking_uri} "
        "--port 5000   -> http://127.0.0.1:5000"
    )
    print(
        f"  API:        RECSYS_HOME={home} {bin_dir / 'recsys'} serve --port {api_port}   -> "
        f"{api}/docs"
    )
