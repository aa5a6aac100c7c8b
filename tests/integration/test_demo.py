"""`recsys demo` through the real Airflow scheduler (api-server, scheduler, dag-processor,
LocalExecutor on SQLite), on a small synthetic stream so it runs in CI without MovieLens."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # its subprocess is bounded at 900 s

RECSYS = str(Path(sys.executable).parent / "recsys")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_runs_the_whole_loop_and_stops_everything(tmp_path):
    from recsys.config import CHAMPION, Settings
    from recsys.registry.client import Registry

    api, airflow = _free_port(), _free_port()
    env = {**os.environ, "RECSYS_HOME": str(tmp_path / "home")}
    for var in (
        "RECSYS_EVENT_STORE_URL",
        "RECSYS_LAKE_ROOT",
        "MLFLOW_TRACKING_URI",
        "RECSYS_ARTIFACT_ROOT",
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
    ):
        env.pop(var, None)
    cmd = [
        RECSYS,
        "demo",
        "--synthetic",
        "--weeks",
        "1",
        "--days",
        "2",
        "--port",
        str(api),
        "--airflow-port",
        str(airflow),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]

    assert "recsys_ingest: 8 success" in out  # 7 backfilled days + the latest scheduled interval
    assert "features of the re-run intervals byte-identical: yes" in out
    assert "recsys_full_retrain: 1 success" in out
    assert f"GET http://127.0.0.1:{api}/recommendations/u1?k=10" in out
    assert "(incremental policy): " in out  # each decision and why, under the registry table
    # The A/B drill: a candidate served a share of the users, and recsys ab status read it out.
    assert re.search(r"recsys ab status  \(\d+ requests from \d+ users\):", out), out[-3000:]
    assert "A/B test: candidate v" in out and "decision: " in out
    assert "stopped every process the demo started" in out
    assert not _in_use(api) and not _in_use(airflow)

    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path / "home")})
    reg = Registry(settings)
    versions = reg.versions()
    assert reg.alias(CHAMPION) is not None
    assert versions[0].tags["recsys.mode"] == "full"
    assert any(v.tags["recsys.mode"] == "incremental" for v in versions[1:])

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "already holds state" in again.stderr  # never clobbered
