"""The serving process killed (SIGKILL) and restarted on the same port while clients keep sending:
they see connection errors only, only while no server is ready, and the new process serves the
champion. Real ``recsys serve`` subprocesses on loopback, a real registry and event store."""

import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recsys.config import CHAMPION, PipelineConfig, Settings, TrainConfig
from recsys.data import collect, events, features, synthetic, validate
from recsys.data.lake import Interval
from recsys.registry.client import Registry
from recsys.release import pipeline

pytestmark = pytest.mark.slow

RECSYS = Path(sys.executable).parent / "recsys"
CLIENTS = 4
K = 5


@pytest.fixture(scope="module")
def champion(tmp_path_factory, module_store_url) -> tuple[Settings, str]:
    """A small model, trained for one epoch and made champion directly (no evaluation); the
    event store on SQLite, then PostgreSQL."""
    home = tmp_path_factory.mktemp("restart")
    settings = Settings.from_env(
        {"RECSYS_HOME": str(home), "RECSYS_EVENT_STORE_URL": module_store_url}
    )
    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(synthetic.generate(n_users=40, n_items=30, days=2)))
    interval = Interval(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3))
    collect.run(settings, interval)
    assert validate.run(settings, interval)["success"]
    features.run(settings, interval)
    trained = pipeline.train(settings, "full", PipelineConfig(train=TrainConfig(epochs=1)))
    version = pipeline.register(settings, trained["run_id"])["version"]
    Registry(settings).set_alias(CHAMPION, version)
    return settings, version


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(settings: Settings, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings.as_env()}
    cmd = [str(RECSYS), "serve", "--port", str(port), "--poll-seconds", "60", "--no-auth"]
    with log.open("a") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float = 90.0) -> float:
    """perf_counter time of the first 200 from /ready (taken after the answer arrived)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log.read_text()}"
        try:
            if _get(port, "/ready")[0] == 200:
                return time.perf_counter()
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout} s:\n{log.read_text()}")


@dataclass
class Client:
    """One keep-alive client: alternately a recommendation and an event, until ``stop``."""

    port: int
    n: int
    version: str
    stop: threading.Event
    samples: list = field(default_factory=list)  # (start, end, outcome, detail)
    acked: list = field(default_factory=list)  # event ids answered with 201

    def run(self) -> None:
        conn, i = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10), 0
        while not self.stop.is_set():
            i += 1
            event_id = f"restart-{self.n}-{i}"
            if i % 2:
                method, path, body = "GET", f"/recommendations/u{self.n}?k={K}", None
            else:
                path, method = "/events", "POST"
                body = json.dumps({"user_id": f"u{self.n}", "item_id": "i1", "event_id": event_id})
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                status, answer = resp.status, json.loads(resp.read())
            except (OSError, http.client.HTTPException) as err:
                conn.close()  # reconnects on the next request
                self.samples.append((start, time.perf_counter(), "connection", repr(err)))
                time.sleep(0.05)  # a refused connect returns at once: do not spin
                continue
            self.samples.append((start, time.perf_counter(), *self._check(status, answer)))
            if status == 201:
                self.acked.append(event_id)
        conn.close()

    def _check(self, status: int, answer: dict) -> tuple[str, str]:
        if status == 201 and answer.get("stored"):
            return "ok", ""
        if status == 200 and answer["model_version"] == self.version:
            if len(answer["items"]) == K:
                return "ok", ""
        return "wrong", f"{status} {answer}"


def test_a_killed_server_restarted_on_the_same_port_loses_nothing(champion, tmp_path):
    settings, version = champion
    port, log = _free_port(), tmp_path / "serve.log"
    first = _start(settings, port, log)
    stop, clients, threads, second = threading.Event(), [], [], None
    try:
        _wait_ready(first, port, log)
        for n in range(1, CLIENTS + 1):
            clients.append(Client(port, n, version, stop))
            threads.append(threading.Thread(target=clients[-1].run, daemon=True))
            threads[-1].start()
        time.sleep(2.0)
        killed_at = time.perf_counter()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # the old server's connections hold the port: binding again needs SO_REUSEADDR
        port_was_held = _bind_fails(port)
        second = _start(settings, port, log)
        ready_at = _wait_ready(second, port, log)
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(15)
        assert _get(port, "/ready") == (
            200,
            {"ready": True, "model_version": version, "event_store": "up"},
        )
        assert _get(port, "/health")[1]["model_version"] == version
    finally:
        stop.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    samples = [s for c in clients for s in c.samples]
    outcomes = {outcome for _, _, outcome, _ in samples}
    assert outcomes == {"ok", "connection"}, [s for s in samples if s[2] == "wrong"][:5]
    errors = [s for s in samples if s[2] == "connection"]
    # an error only for a request that ended after the kill and began before the new server was
    # ready (one in flight at the kill, or sent while nothing listened)
    outside = [s for s in errors if s[1] < killed_at or s[0] > ready_at]
    assert not outside, outside[:5]
    for c in clients:  # every client got through before the kill and after the restart
        assert any(s[2] == "ok" and s[1] < killed_at for s in c.samples)
        assert any(s[2] == "ok" and s[0] > ready_at for s in c.samples)
    acked = {event_id for c in clients for event_id in c.acked}
    assert acked  # every acknowledged event survived the SIGKILL
    assert not acked - set(_stored(settings, "restart-"))
    assert log.read_text().count(f"Uvicorn running on http://127.0.0.1:{port}") == 2
    assert port_was_held, "nothing held the port after the kill: SO_REUSEADDR went untested"


def _bind_fails(port: int) -> bool:
    """Whether a plain bind (no SO_REUSEADDR) to ``port`` fails now: the killed server's
    connections (FIN_WAIT or TIME_WAIT) still hold it."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _stored(settings: Settings, prefix: str) -> list[str]:
    import sqlalchemy as sa

    from recsys import schema as S

    col = events.events_table.c[S.EVENT_ID]
    with events.EventStore(settings.event_store_url).engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(col).where(col.like(f"{prefix}%")))]
