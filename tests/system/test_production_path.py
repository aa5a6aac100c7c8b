"""The production path against real services: Airflow's scheduler, dag-processor, api-server,
triggerer and a Celery worker on PostgreSQL + Redis, an ``mlflow server`` backed by PostgreSQL,
and the event store on PostgreSQL. Nothing in the DAGs or the library changes: only environment
variables. Skips on a machine without PostgreSQL or Redis, except under CI=true (fails)."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
START = dt.date(2024, 3, 4)  # a Monday; the synthetic stream covers START .. START + DAYS
DAYS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _psycopg2(url: str) -> str:
    """Airflow and MLflow use the psycopg2 driver (its Celery result backend needs it too)."""
    return url.replace("postgresql+psycopg://", "postgresql+psycopg2://")


def _call(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _compose_auth() -> dict[str, str]:
    """Airflow's login settings exactly as docker/compose.yaml sets them, defaults filled in."""
    import yaml

    env = yaml.safe_load(COMPOSE.read_text())["x-airflow-env"]
    keys = [k for k in env if k == "AIRFLOW__CORE__AUTH_MANAGER" or "SIMPLE_AUTH_MANAGER_" in k]
    keys.remove("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")  # a path in the image
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(env[k])) for k in keys}


def _events_file(path: Path) -> Path:
    import pandas as pd

    from recsys.data import synthetic

    start = dt.datetime.combine(START, dt.time())
    records = synthetic.generate(n_users=60, n_items=40, start=start, days=DAYS, seed=3)
    pd.DataFrame(records).to_json(path, orient="records", lines=True)
    return path


def test_celery_postgres_redis_and_an_mlflow_server_run_the_loop(tmp_path, postgres_db, redis_url):
    import sqlalchemy as sa
    from mlflow import MlflowClient

    from recsys import local_airflow
    from recsys.config import CHAMPION, TRAINING_POOL, Settings
    from recsys.data.features import MANIFEST
    from recsys.data.lake import Interval, Lake
    from recsys.registry.client import Registry

    t0 = time.time()
    airflow_db, mlflow_db, events_db = postgres_db(), postgres_db(), postgres_db()
    api_port, mlflow_port = _free_port(), _free_port()
    api = f"http://127.0.0.1:{api_port}"
    settings = Settings(
        home=tmp_path / "home",
        event_store_url=events_db,
        lake_root=tmp_path / "lake",
        tracking_uri=f"http://127.0.0.1:{mlflow_port}",
        artifact_root=None,  # the server's own store, uploads go through it
    )
    auth = _compose_auth()  # the deployment's users and roles: an admin and a viewer
    users = dict(u.split(":") for u in auth["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
    admin, viewer = (next(u for u, role in users.items() if role == r) for r in ("admin", "viewer"))
    passwords = {user: secrets.token_urlsafe(12) for user in users}
    (tmp_path / "passwords.json").write_text(json.dumps(passwords))
    queue = f"recsys_{uuid.uuid4().hex[:8]}"  # this test's own Celery queue on the shared Redis
    env = local_airflow.airflow_env(settings, api_port)
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _psycopg2(airflow_db),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": airflow_db,  # psycopg 3 is async too
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + _psycopg2(airflow_db),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CELERY__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            # Real authentication as compose has it: users with passwords, a JWT secret.
            **auth,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        }
    )
    services = local_airflow.Processes(env, tmp_path / "logs")
    db = local_airflow.AirflowDB(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])

    def say(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    def wait(what: str, check: Any, timeout: float) -> Any:
        return local_airflow.wait_for(what, check, timeout, services, every=3)

    try:
        services.start(
            "mlflow",
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            _psycopg2(mlflow_db),
            "--artifacts-destination",
            (tmp_path / "mlflow-artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        )
        imported = subprocess.run(
            [
                str(BIN / "recsys"),
                "events",
                "import",
                "--file",
                str(_events_file(tmp_path / "e.jsonl")),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert imported.returncode == 0, imported.stderr[-2000:]
        local_airflow.run_airflow(env, "db", "migrate")
        local_airflow.run_airflow(env, "pools", "set", TRAINING_POOL, "1", "one training at a time")
        local_airflow.run_airflow(env, "dags", "reserialize")
        say("metadata DB on PostgreSQL migrated; starting the Airflow services")
        airflow = str(BIN / "airflow")
        services.start(
            "api-server",
            airflow,
            "api-server",
            "--port",
            str(api_port),
            "--host",
            "127.0.0.1",
            "--workers",
            "1",
        )
        services.start("scheduler", airflow, "scheduler")
        services.start("dag-processor", airflow, "dag-processor")
        services.start("triggerer", airflow, "triggerer")
        services.start(
            "worker", airflow, "celery", "worker", "--queues", queue, "--concurrency", "2"
        )
        wait("the api-server", lambda: local_airflow.get_json(f"{api}/api/v2/monitor/health"), 180)
        wait(
            "the MLflow server",
            lambda: urllib.request.urlopen(f"{settings.tracking_uri}/health"),
            120,
        )
        say("services up")

        # No anonymous access outside the embedded demo: the REST API and the UI's own API.
        for path in (
            "/api/v2/dags",
            "/api/v2/dags/recsys_ingest/dagRuns",
            "/ui/config",
            "/ui/dags",
        ):
            status, _ = _call("GET", f"{api}{path}")
            assert status == 401, path
        status, _ = _call("PATCH", f"{api}/api/v2/dags/recsys_ingest", None, {"is_paused": False})
        assert status == 401
        status, body = _call(
            "POST", f"{api}/auth/token", body={"username": admin, "password": "wrong"}
        )
        assert status in (401, 403)

        def login(user: str) -> str:
            status, body = _call(
                "POST", f"{api}/auth/token", body={"username": user, "password": passwords[user]}
            )
            assert status == 201, body
            return body["access_token"]

        token = login(admin)
        status, dags = _call("GET", f"{api}/api/v2/dags?tags=recsys", token)
        assert status == 200
        assert {d["dag_id"] for d in dags["dags"]} >= {"recsys_ingest", "recsys_full_retrain"}
        # The viewer reads and changes nothing: no unpausing, no triggering.
        seen = login(viewer)
        status, _ = _call("GET", f"{api}/ui/dags", seen)
        assert status == 200
        status, _ = _call("PATCH", f"{api}/api/v2/dags/recsys_ingest", seen, {"is_paused": False})
        assert status == 403
        status, _ = _call(
            "POST", f"{api}/api/v2/dags/recsys_ingest/dagRuns", seen, {"logical_date": None}
        )
        assert status == 403
        status, dag = _call("GET", f"{api}/api/v2/dags/recsys_ingest", token)
        assert status == 200 and dag["is_paused"] is True

        def unpause(dag_id: str) -> None:
            status, body = _call(
                "PATCH", f"{api}/api/v2/dags/{dag_id}", token, {"is_paused": False}
            )
            assert status == 200 and body["is_paused"] is False, body

        unpause("recsys_ingest")
        end = START + dt.timedelta(days=2)
        args = local_airflow.backfill_args(START, end, max_active_runs=2)
        say(" ".join(("airflow", *args)))
        local_airflow.run_airflow(env, *args)
        backfill = db.last_backfill()
        assert backfill is not None
        wait("the backfill", lambda: db.backfill_done(backfill[0]) and db.idle(), 300)
        backfilled = [r for r in db.runs("recsys_ingest") if r[1] == "backfill"]
        assert [r[2] for r in backfilled] == ["success"] * 3, db.runs("recsys_ingest")
        say("backfill of three intervals done")

        # A manual trigger with invalid params is refused by Airflow's Param validation.
        status, body = _call(
            "POST",
            f"{api}/api/v2/dags/recsys_full_retrain/dagRuns",
            token,
            {"logical_date": None, "conf": {"epochs": "many"}},
        )
        assert status == 400 and "epochs" in str(body), (status, body)
        assert db.runs("recsys_full_retrain") == []

        unpause("recsys_full_retrain")  # the scheduler starts the latest weekly retrain
        wait("the full retrain", lambda: db.runs("recsys_full_retrain") and db.idle(), 400)
        assert [r[2] for r in db.runs("recsys_full_retrain")] == ["success"]
        client = MlflowClient(settings.tracking_uri)
        first = client.get_model_version_by_alias(settings.registered_model, CHAMPION)
        say(f"full retrain done: champion v{first.version}")

        unpause("recsys_incremental_finetune")
        wait("Asset events queued during the backfill", db.idle, 300)
        before = len(db.runs("recsys_incremental_finetune"))
        day = START + dt.timedelta(days=3)
        interval = {
            "logical_date": f"{day}T00:00:00Z",
            "data_interval_start": f"{day}T00:00:00Z",
            "data_interval_end": f"{day + dt.timedelta(days=1)}T00:00:00Z",
        }
        status, run = _call(
            "POST", f"{api}/api/v2/dags/recsys_ingest/dagRuns", token, {**interval, "conf": {}}
        )
        assert status == 200, run
        say(f"triggered recsys_ingest for {day} through the REST API: {run['dag_run_id']}")
        manual = run["dag_run_id"]
        wait(
            "the ingest and the fine-tune it triggers",
            lambda: (
                any(
                    r[0] == manual and r[2] in ("success", "failed")
                    for r in db.runs("recsys_ingest")
                )
                and db.idle()
            ),
            400,
        )
        status, got = _call(
            "GET", f"{api}/api/v2/dags/recsys_ingest/dagRuns/{run['dag_run_id']}", token
        )
        assert status == 200 and got["state"] == "success", got
        finetunes = db.runs("recsys_incremental_finetune")[before:]
        assert [(kind, state) for _, kind, state in finetunes] == [("asset_triggered", "success")]
        status, tis = _call(
            "GET",
            f"{api}/api/v2/dags/recsys_incremental_finetune/dagRuns/{finetunes[0][0]}/taskInstances",
            token,
        )
        assert status == 200
        assert {t["task_id"]: t["state"] for t in tis["task_instances"]} == dict.fromkeys(
            ("train", "evaluate", "register", "promote"), "success"
        )
        say("Asset-triggered fine-tune and its promotion step done")

        lake = Lake(settings.lake_root)
        expected = [
            Interval.parse(str(START + dt.timedelta(days=d)), str(START + dt.timedelta(days=d + 1)))
            for d in range(4)
        ]
        assert set(expected) <= set(lake.partitions("raw"))
        for interval in expected:
            assert lake.manifest("raw", interval)["rows"] > 0
            # Features are cumulative: backfilled two at a time, each still holds every day before.
            built = json.loads((lake.snapshot(interval) / MANIFEST).read_text())
            assert [p["interval"] for p in built["partitions"]] == [
                iv.id for iv in lake.partitions("raw") if iv.end <= interval.end
            ]

        reg = Registry(settings)
        wait("the fine-tune's version in the registry", lambda: len(reg.versions()) >= 2, 60)
        versions = reg.versions()
        modes = [v.tags.get("recsys.mode") for v in versions]
        assert modes == ["full", "incremental"], [(v.version, v.tags) for v in versions]
        champion = client.get_model_version_by_alias(settings.registered_model, CHAMPION)
        assert champion.version in {v.version for v in versions}
        # The registry really is the PostgreSQL database behind the server.
        with sa.create_engine(mlflow_db).connect() as conn:
            row = conn.execute(
                sa.text("SELECT version FROM registered_model_aliases WHERE alias = :a"),
                {"a": CHAMPION},
            ).scalar()
        assert str(row) == champion.version
        say(f"champion v{champion.version} in the MLflow server's PostgreSQL")
    finally:
        services.stop()
    for name in ("api-server", "scheduler", "worker", "mlflow"):
        assert name not in services.procs
    assert local_airflow.port_free(api_port) and local_airflow.port_free(mlflow_port)
