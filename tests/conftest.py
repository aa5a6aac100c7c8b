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
