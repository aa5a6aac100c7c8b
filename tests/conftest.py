"""Shared fixtures. Airflow reads its configuration at import time, so its environment is set
here, before any test module imports it: a throw-away AIRFLOW_HOME with a SQLite metadata DB.

Torch's thread count is set here too, for the same reason (torch reads it at import): the suite
runs on two xdist workers, each starting Airflow tasks, trainings and servers as subprocesses, and
torch's default of one OpenMP thread per core in every one of them oversubscribes a 2-core machine.
One thread each changes no result the tests check, only how the cores are shared."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"

_airflow_home = tempfile.mkdtemp(prefix="recsys-test-airflow-")
atexit.register(shutil.rmtree, _airflow_home, ignore_errors=True)  # one per pytest process
os.environ.update(
    AIRFLOW_HOME=_airflow_home,
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
    AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    # Trainings of seconds: no system-metrics sampler (tests/integration/test_train_resume.py
    # turns it on to test it).
    MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false",
    GIT_PYTHON_REFRESH="quiet",
)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # a user's own setting wins


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings with all state under a fresh RECSYS_HOME (also exported, for DAG tasks)."""
    from recsys.config import ENV_HOME, Settings

    home = tmp_path / "recsys"
    monkeypatch.setenv(ENV_HOME, str(home))
    for var in (
        "RECSYS_EVENT_STORE_URL",
        "RECSYS_LAKE_ROOT",
        "MLFLOW_TRACKING_URI",
        "RECSYS_ARTIFACT_ROOT",
    ):
        monkeypatch.delenv(var, raising=False)
    return Settings.from_env()


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """An Airflow metadata DB, migrated once per session."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    return _airflow_home


def _unreachable(what: str, where: str, err: Exception) -> None:
    """Skip with the reason, except under CI=true, where the production path must be tested."""
    if os.environ.get("CI") == "true":
        raise err
    pytest.skip(f"{what} not reachable at {where} ({type(err).__name__}: {err})")


@pytest.fixture
def postgres_db():
    """A factory of fresh databases on the PostgreSQL at RECSYS_TEST_PG (default
    127.0.0.1:5432, user postgres); each call returns a new database's SQLAlchemy URL, and all
    are dropped afterwards. Skips when none is reachable, except under CI=true (fails)."""
    import uuid

    import sqlalchemy as sa

    base = os.environ.get("RECSYS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
    admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def create() -> str:
        name = f"recsys_test_{uuid.uuid4().hex[:12]}"
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except Exception as err:  # no server, no driver, no permission: say which
            _unreachable("PostgreSQL", base, err)
        names.append(name)
        return f"{base}/{name}"

    yield create
    if names:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_db) -> str:
    """A fresh database on the test PostgreSQL (see ``postgres_db``)."""
    return postgres_db()


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_url(request, tmp_path_factory) -> str:
    """``store_url`` for a module's shared fixtures: one database per backend and module."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'events.db'}"
        return
    import uuid

    import sqlalchemy as sa

    base = os.environ.get("RECSYS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
    admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    name = f"recsys_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as err:
        _unreachable("PostgreSQL", base, err)
    yield f"{base}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path: Path) -> str:
    """An empty event store database on each backend: a SQLite file, then a fresh PostgreSQL
    database (skipped when none is reachable, except under CI=true)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("postgres_db")()


@pytest.fixture
def backend_settings(settings, store_url, monkeypatch: pytest.MonkeyPatch):
    """``settings`` with the event store (and so the alias log and impressions) on each backend,
    exported too, for child processes."""
    import dataclasses

    from recsys.config import ENV_EVENT_STORE

    monkeypatch.setenv(ENV_EVENT_STORE, store_url)
    return dataclasses.replace(settings, event_store_url=store_url)


@pytest.fixture
def redis_url() -> str:
    """The Redis at RECSYS_TEST_REDIS (default redis://127.0.0.1:6379/0), after a PING.

    Skips when none is reachable, except under CI=true (fails)."""
    import redis

    url = os.environ.get("RECSYS_TEST_REDIS", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as err:
        _unreachable("Redis", url, err)
    return url


@pytest.fixture(scope="session")
def s3_endpoint():
    """A local S3 server (moto's, in a thread of this process) for a lake on an object store:
    its URL. The S3 protocol is spoken over HTTP, so child processes can use it too."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint) -> dict[str, str]:
    """The AWS variables that reach ``s3_endpoint``, for child processes."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }


@pytest.fixture
def s3_lake(s3_env, monkeypatch) -> str:
    """An ``s3://`` lake root in a new bucket on ``s3_endpoint``, with ``s3_env`` set in this
    process."""
    import uuid

    import s3fs

    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_env["AWS_ENDPOINT_URL"], skip_instance_cache=True)
    fs.mkdir(bucket)
    return f"s3://{bucket}/lake"


# The longest files first, one on each xdist worker, so that neither is left to run alone at the
# end (xdist is told not to reorder files by their number of tests).
LONGEST_FIRST = (
    "tests/integration/test_demo.py",
    "tests/system/test_production_path.py",
    "tests/integration/test_cli.py",
    "tests/dags/test_dag_runs.py",
    "tests/integration/test_promotion.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
