"""Shared fixtures. Airflow reads its configuration at import time, so its environment is set
here, before any test module imports it: a throw-away AIRFLOW_HOME with a SQLite metadata DB."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"

_airflow_home = tempfile.mkdtemp(prefix="recsys-test-airflow-")
os.environ.update(
    AIRFLOW_HOME=_airflow_home,
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
    AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    GIT_PYTHON_REFRESH="quiet",
)


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


@pytest.fixture
def postgres_url() -> str:
    """A fresh database on the PostgreSQL at RECSYS_TEST_PG (default 127.0.0.1:5432, user postgres).

    Skips with the reason when none is reachable, except under CI=true, where it fails: the
    production path must be tested there.
    """
    import uuid

    import sqlalchemy as sa

    base = os.environ.get("RECSYS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
    try:
        admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = f"recsys_test_{uuid.uuid4().hex[:12]}"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # no server, no driver, no permission: say which
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL not reachable at {base} ({type(err).__name__}: {err})")
    yield f"{base}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
