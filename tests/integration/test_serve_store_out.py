"""Serving degrades, never 500s: with the event store out, lists come from the recent cache and
the trending list (flagged ``degraded``), events get a 503 with ``Retry-After``, and ``/health`` and
``/ready`` say so. On SQLite and on PostgreSQL."""

import dataclasses
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.helpers.registry import stored_champion
from tests.helpers.serving import OPEN, scrape


@pytest.fixture
def client(backend_settings, tmp_path):
    """A champion (the stored fixture model, items i1..i12) served from each backend."""
    from recsys.serving.app import create_app

    stored_champion(backend_settings, tmp_path)
    serving = dataclasses.replace(OPEN, store_retry_s=0.5, store_timeout_s=1.0)
    with TestClient(create_app(backend_settings, poll_seconds=0, serving=serving)) as c:
        yield c


def _out_url(url: str, tmp_path) -> str:
    """An address of the same kind where no store answers."""
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-folder' / 'events.db'}"
    return "postgresql+psycopg://postgres@127.0.0.1:1/recsys"


def test_with_the_store_out_lists_degrade_and_nothing_is_a_500(client, store_url, tmp_path):
    assert client.post("/events", json={"user_id": "u1", "item_id": "i3"}).json()["stored"]
    assert client.get("/recommendations/u1").json()["degraded"] is False
    store = client.app.state.store
    working = store.engine
    store.engine = sa.create_engine(_out_url(store_url, tmp_path))  # the store goes out

    known = client.get("/recommendations/u1", params={"k": 5})
    assert known.status_code == 200, known.text
    body = known.json()
    assert body["degraded"] and not body["cold_start"]  # i3, cached in process, places u1
    assert "i3" not in [r["item_id"] for r in body["items"]]
    t0 = time.perf_counter()
    for _ in range(5):  # within store_retry_s the store is not asked again: no wait per request
        unknown = client.get("/recommendations/nobody")
        assert unknown.status_code == 200 and unknown.json()["degraded"]
    assert time.perf_counter() - t0 < 0.5

    posted = client.post("/events", json={"user_id": "u1", "item_id": "i4"})
    assert posted.status_code == 503 and posted.headers["Retry-After"] == "1"
    health = client.get("/health").json()
    assert health["status"] == "degraded" and not health["event_store"]["up"]
    assert health["event_store"]["last_error"]
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["event_store"].startswith("out")
    metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics and scrape(metrics)["recsys_http_errors_total"] == 1

    store.engine = working  # back
    time.sleep(0.6)
    assert client.get("/recommendations/u1").json()["degraded"] is False
    assert client.get("/health").json()["event_store"]["up"]
