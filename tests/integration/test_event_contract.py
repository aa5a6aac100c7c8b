"""One event contract at every edge: what the API or the importer accepts passes the validation
gate after collection. On SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys import cli
from recsys.data import event_files, events, features, ingest
from recsys.data.lake import Interval
from tests.helpers.serving import OPEN, scrape

FAST = settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def client(backend_settings):
    from recsys.serving.app import create_app

    with TestClient(create_app(backend_settings, poll_seconds=0, serving=OPEN)) as c:
        yield c


def _today() -> Interval:
    start = dt.datetime.now(dt.UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return Interval(start, start + dt.timedelta(days=1))


def test_new_events_are_stored_and_what_the_gate_would_reject_is_refused(client, backend_settings):
    """The production path: 12 new events are stored (``stored: true``); an id with a space, a
    control character or an event time 50 minutes ahead is a 422; the day then ingests whole."""
    posted = [
        client.post("/events", json={"user_id": f"u{k % 3}", "item_id": f"i{k}"}) for k in range(12)
    ]
    assert [r.status_code for r in posted] == [201] * 12
    assert all(r.json()["stored"] and not r.json()["duplicate"] for r in posted)
    again = client.post("/events", json={"user_id": "u0", "item_id": "i0", "event_id": "e-1"})
    assert (
        again.json()["stored"]
        and not client.post(
            "/events", json={"user_id": "u0", "item_id": "i0", "event_id": "e-1"}
        ).json()["stored"]
    )
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=50)).isoformat()
    refused = [
        {"user_id": "u 1", "item_id": "i1"},
        {"user_id": "u1", "item_id": "i\x00"},
        {"user_id": "u1", "item_id": "i\x1b[31m"},
        {"user_id": "u1", "item_id": "i1", "event_time": ahead},
    ]
    for body in refused:
        resp = client.post("/events", json=body)
        assert resp.status_code == 422, (body, resp.text)
    metrics = scrape(client.get("/metrics").text)
    assert metrics["recsys_events_stored_total"] == 13
    assert metrics["recsys_events_duplicate_total"] == 1
    day = _today()
    cli.main(["ingest", "--start", day.start.isoformat(), "--end", day.end.isoformat()])
    assert features.load(backend_settings).manifest["n_events"] == 13


# Ids of every kind: plain, unicode, with whitespace or control characters, too long.
IDS = st.one_of(
    st.text("abcxyz019_-.:é中", min_size=1, max_size=12),
    st.text(st.characters(codec="utf-8"), min_size=0, max_size=6),
    st.sampled_from(["a b", "a\tb", "a\x00", "a\x7f", "a\u0085", "a\u2028", "x" * 129, ""]),
)
OFFSETS = st.sampled_from([-86400 * 400, -3600, -60, 0, 60, 299, 301, 1800, 3000])
TYPES = st.sampled_from(["view", "click", "purchase", "rating", "share", ""])
VALUES = st.one_of(st.none(), st.floats(-5, 5), st.sampled_from(["nan", "inf", "4"]))


@st.composite
def raw_events(draw):
    event = {"user_id": draw(IDS), "item_id": draw(IDS), "event_type": draw(TYPES)}
    event["offset"] = draw(OFFSETS)  # seconds after now: the event_time
    event["replay"] = draw(st.booleans())  # the importer: no ingested_at (arrived at event_time)
    if draw(st.booleans()):
        event["value"] = draw(VALUES)
    return event


def _reset(store_url, settings) -> None:
    store = events.EventStore(store_url)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(events.events_table))
    store.engine.dispose()
    shutil.rmtree(settings.lake_root, ignore_errors=True)


def _gate_passes_all(settings) -> None:
    """Collect everything stored in one interval that ends just after the last arrival (where an
    event stamped too far after its arrival would break the gate): every row passes."""
    store = events.EventStore(settings.event_store_url)
    stored, bounds = store.count(), store.bounds()
    store.engine.dispose()
    if bounds is None:
        return
    interval = Interval(dt.datetime(1995, 1, 1), bounds[1] + dt.timedelta(seconds=1))
    result = ingest.run(settings, interval)
    checked = result["validation"]
    assert checked["success"] and checked["rejected_rows"] == 0, checked["summary"]
    assert checked["rows"] == stored


@FAST
@given(batch=st.lists(raw_events(), min_size=1, max_size=8))
def test_what_the_api_accepts_passes_the_gate(client, backend_settings, store_url, batch):
    _reset(store_url, backend_settings)
    now, accepted = dt.datetime.now(dt.UTC), 0
    for event in batch:
        body = {k: v for k, v in event.items() if k not in ("offset", "replay")}
        body["event_time"] = (now + dt.timedelta(seconds=event["offset"])).isoformat()
        if body.get("value") in ("nan", "inf", "4"):
            body["value"] = float(body["value"])
        resp = client.post(
            "/events",
            content=json.dumps(body, allow_nan=True),
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code in (201, 422), resp.text
        accepted += resp.status_code == 201
    assert events.EventStore(store_url).count() == accepted  # every accepted event is stored
    _gate_passes_all(backend_settings)


@FAST
@given(batch=st.lists(raw_events(), min_size=1, max_size=8))
def test_what_the_importer_accepts_passes_the_gate(backend_settings, store_url, tmp_path, batch):
    _reset(store_url, backend_settings)
    now = dt.datetime.now(dt.UTC)
    lines = []
    for event in batch:
        record = {k: v for k, v in event.items() if k not in ("offset", "replay")}
        record["event_time"] = (now + dt.timedelta(seconds=event["offset"])).isoformat()
        if not event["replay"]:  # it arrived now
            record["ingested_at"] = now.isoformat()
        lines.append(json.dumps(record))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    store = events.EventStore(backend_settings.event_store_url)
    event_files.import_file(store, path, tmp_path / "rejects.jsonl", now=now)
    store.engine.dispose()
    _gate_passes_all(backend_settings)
