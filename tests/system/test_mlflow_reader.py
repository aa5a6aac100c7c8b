"""The serving API's MLflow user against a real basic-auth tracking server, started with the mlflow
service's own command from docker/compose.yaml (its auth config included): the reader that
``recsys registry reader`` creates loads the champion the way serving does, and every write it
tries is refused."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN, READER = "admin", "recsys_serving"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _compose_mlflow_script(port: int) -> str:
    """The mlflow service's command, on loopback and a free port instead of 0.0.0.0:5000."""
    service = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["mlflow"]
    shell, flag, script = service["command"]
    assert (shell, flag) == ("bash", "-c")
    script = script.replace("$$", "$")  # compose's escape for a literal $
    assert "--host 0.0.0.0 --port 5000" in script
    return script.replace("--host 0.0.0.0 --port 5000", f"--host 127.0.0.1 --port {port}")


@pytest.fixture
def server(tmp_path):
    """A basic-auth MLflow server as compose runs it (SQLite here): its URL and admin password."""
    port, password = _free_port(), secrets.token_hex(16)
    env = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path / 'auth.db'}",
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic-auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{port}",
    }
    log = (tmp_path / "mlflow.log").open("w")
    proc = subprocess.Popen(
        ["bash", "-c", _compose_mlflow_script(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the MLflow server did not start in 120 s"
                time.sleep(0.5)
        yield url, password
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def _login(monkeypatch, username: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def _reader_command(
    env, url: str, login: tuple[str, str], reader_password: str, username: str = READER
) -> tuple[bool, str]:
    """``recsys registry reader`` as compose's airflow-init runs it, logged in as ``login``:
    whether it succeeded, and what it printed (or its error)."""
    from recsys.cli import main

    monkeypatch, capsys = env
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", url)
        m.setenv("MLFLOW_TRACKING_USERNAME", login[0])
        m.setenv("MLFLOW_TRACKING_PASSWORD", login[1])
        m.setenv("RECSYS_SERVING_MLFLOW_PASSWORD", reader_password)
        capsys.readouterr()
        try:
            main(["registry", "reader", "--username", username])
        except SystemExit as exit_:
            assert exit_.code == 1
            return False, capsys.readouterr().err.strip()  # the command's one-line error
    return True, capsys.readouterr().out.strip()


def test_the_serving_user_loads_the_champion_and_changes_nothing(
    server, settings, tmp_path, monkeypatch, capsys
):
    from mlflow.exceptions import MlflowException

    from recsys.config import CHAMPION
    from recsys.registry.client import Registry
    from recsys.serving.champion import ChampionHolder
    from tests.helpers.registry import STORED_MODEL

    url, admin_password = server
    # Artifacts go through the server (mlflow-artifacts:/), as in compose.
    settings = dataclasses.replace(settings, tracking_uri=url, artifact_root=None)
    _login(monkeypatch, ADMIN, admin_password)
    admin = Registry(settings)
    run_id = admin.create_run("stored", {})
    admin.client.log_artifacts(run_id, str(STORED_MODEL), "model")
    admin.client.create_registered_model(admin.name)
    source = f"{admin.run(run_id).info.artifact_uri}/model"  # mlflow-artifacts:/...: via the server
    first = admin.client.create_model_version(admin.name, source=source, run_id=run_id).version
    admin.set_alias(CHAMPION, str(first))

    reader_password = secrets.token_hex(16)
    cli = (monkeypatch, capsys)
    ok, said = _reader_command(cli, url, (ADMIN, admin_password), "too-short")
    assert not ok and "at least 12 characters" in said
    ok, said = _reader_command(cli, url, (ADMIN, admin_password), reader_password)
    assert ok, said
    assert said == f"MLflow reader {READER} created"

    _login(monkeypatch, READER, reader_password)
    holder = ChampionHolder(settings)
    assert holder.refresh(), holder.last_error  # found the alias, downloaded, loaded, warmed up
    assert holder.current.version == str(first)
    reader = Registry(settings)
    refused = {
        "move champion": lambda: reader.client.set_registered_model_alias(
            reader.name, CHAMPION, str(first)
        ),
        "remove champion": lambda: reader.client.delete_registered_model_alias(
            reader.name, CHAMPION
        ),
        "register a version": lambda: reader.client.create_model_version(
            reader.name, source=source, run_id=run_id
        ),
        "tag a version": lambda: reader.client.set_model_version_tag(
            reader.name, str(first), "recsys.gate", "passed"
        ),
        "log to a training run": lambda: reader.client.log_metric(run_id, "ndcg_at_10", 1.0),
        "upload an artifact": lambda: reader.client.log_artifact(
            run_id, str(STORED_MODEL / "MLmodel"), "model"
        ),
        "create a user": lambda: _reader_command(
            cli, url, (READER, reader_password), "x" * 16, username="intruder"
        ),
    }
    allowed = []
    for what, attempt in refused.items():
        try:
            result = attempt()
        except MlflowException as err:
            assert "403" in str(err) or err.error_code == "PERMISSION_DENIED", (what, err)
            continue
        except Exception as err:  # the artifact upload fails in requests, not in MLflow
            assert "403" in str(err), (what, err)
            continue
        if isinstance(result, tuple) and not result[0]:  # the command's one-line error
            assert "403" in result[1], result[1]
            continue
        allowed.append(what)
    assert allowed == []
    assert admin.alias(CHAMPION).version == str(first)

    # Run again (airflow-init does, on every start): the password is reset, the user kept.
    again = secrets.token_hex(16)
    ok, said = _reader_command(cli, url, (ADMIN, admin_password), again)
    assert ok and "updated" in said, said
    _login(monkeypatch, READER, reader_password)  # the old password no longer works
    with pytest.raises(MlflowException):
        Registry(settings).alias(CHAMPION)
    _login(monkeypatch, READER, again)
    assert Registry(settings).alias(CHAMPION).version == str(first)
