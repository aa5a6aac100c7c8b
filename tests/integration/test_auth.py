"""Who may write: API keys with scopes, revocation, rate limits and the writer of each event, on
SQLite and PostgreSQL."""

import dataclasses
import datetime as dt
import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from recsys.cli import main
from recsys.config import ServingConfig
from recsys.data import collect, events
from recsys.data.lake import Interval, Lake
from recsys.serving.app import create_app
from recsys.serving.auth import KeyStore, keys_table
from tests.helpers.registry import stored_champion
from tests.helpers.serving import scrape

pytestmark = pytest.mark.slow

STRICT = ServingConfig(key_cache_s=0.0)  # keys required (the default), revocation at once


@pytest.fixture
def served(backend_settings, tmp_path):
    stored_champion(backend_settings, tmp_path)
    return backend_settings


def _create(capsys, scopes: str) -> dict:
    main(["keys", "create", "--scopes", scopes, "--name", f"test {scopes}", "--json"])
    return json.loads(capsys.readouterr().out)


def _click(user="u1", item="i2"):
    return {"user_id": user, "item_id": item, "event_type": "click"}


def test_keys_are_required_scoped_revocable_and_stored_only_as_hashes(served, capsys):
    writer = _create(capsys, "events:write")
    reader = _create(capsys, "recommendations:read")
    admin = _create(capsys, "admin")
    assert writer["key"].startswith(f"rk_{writer['id']}_")
    store = KeyStore(events.EventStore(served.event_store_url).engine)
    with store.engine.connect() as conn:
        rows = conn.execute(keys_table.select()).mappings().all()
    secret = writer["key"].split("_")[2]
    assert len(rows) == 3 and all(secret not in json.dumps(dict(r), default=str) for r in rows)

    def auth(made):
        return {"Authorization": f"Bearer {made['key']}"}

    with TestClient(create_app(served, poll_seconds=0, serving=STRICT)) as client:
        assert client.get("/health").json()["auth"] == "api keys"
        for headers in ({}, {"Authorization": "Bearer rk_nope_nope"}, {"Authorization": "x"}):
            refused = client.post("/events", json=_click(), headers=headers)
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert client.get("/recommendations/u1").status_code == 401
        assert client.post("/recommendations", json={"items": ["i1"]}).status_code == 401
        wrong = client.post("/events", json=_click(), headers=auth(reader))
        assert wrong.status_code == 403 and "events:write" in wrong.json()["detail"]
        assert client.get("/recommendations/u1", headers=auth(writer)).status_code == 403
        assert client.get("/recommendations/u1", headers=auth(reader)).status_code == 200
        stored = client.post("/events", json=_click(), headers=auth(writer))
        assert stored.status_code == 201
        assert client.post("/events", json=_click("u2"), headers=auth(admin)).status_code == 201

        main(["keys", "revoke", writer["id"], "--json"])
        assert json.loads(capsys.readouterr().out)["revoked_at"]
        assert client.post("/events", json=_click(), headers=auth(writer)).status_code == 401
        main(["keys", "list", "--json"])
        listed = {k["id"]: k for k in json.loads(capsys.readouterr().out)}
        assert listed[writer["id"]]["revoked_at"] and listed[reader["id"]]["revoked_at"] is None
        with pytest.raises(SystemExit) as done:
            main(["keys", "revoke", writer["id"]])
        assert done.value.code == 1 and "already revoked" in capsys.readouterr().err

    # Each event carries the key that wrote it, never one a body claims.
    engine = events.EventStore(served.event_store_url).engine
    with engine.connect() as conn:
        got = conn.execute(sa.select(events.events_table.c.user_id, events.events_table.c.key_id))
        writers = {user: key for user, key in got}
    assert writers == {"u1": writer["id"], "u2": admin["id"]}


def test_a_body_cannot_claim_a_key_and_lineage_names_the_writers(served, capsys):
    writer = _create(capsys, "events:write")
    headers = {"Authorization": f"Bearer {writer['key']}"}
    with TestClient(create_app(served, poll_seconds=0, serving=STRICT)) as client:
        claimed = client.post("/events", json={**_click(), "key_id": "someone"}, headers=headers)
        assert claimed.status_code == 422  # an unknown field: refused, not trusted
        assert client.post("/events", json=_click(), headers=headers).status_code == 201
    store = events.EventStore(served.event_store_url)
    store.append(events.prepare_rows([{**_click("u9"), "key_id": "forged"}]))  # an import
    today = dt.datetime.now(dt.UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    interval = Interval(today, today + dt.timedelta(days=1))
    collect.run(served, interval)
    manifest = Lake(served.lake_root).manifest("staging", interval)
    assert manifest["writers"] == {"(no key)": 1, writer["id"]: 1}


def test_a_key_over_its_rate_gets_429_with_retry_after(served, capsys):
    reader = _create(capsys, "recommendations:read")
    other = _create(capsys, "recommendations:read")
    slow = dataclasses.replace(STRICT, rate_per_key=0.5, rate_burst=2)
    with TestClient(create_app(served, poll_seconds=0, serving=slow)) as client:

        def get(made):
            return client.get(
                "/recommendations/u1", headers={"Authorization": f"Bearer {made['key']}"}
            )

        assert [get(reader).status_code for _ in range(2)] == [200, 200]
        limited = get(reader)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert get(other).status_code == 200  # per key: another client is not slowed
        assert scrape(client.get("/metrics").text)["recsys_rate_limited_total"] == 1


def test_no_auth_is_explicit(served):
    with TestClient(
        create_app(served, poll_seconds=0, serving=ServingConfig(require_keys=False))
    ) as c:
        assert c.get("/health").json()["auth"] == "off (--no-auth)"
        assert c.post("/events", json=_click()).status_code == 201


def test_a_flood_without_a_key_writes_no_impression_and_no_click(served):
    """To drag a live model's CTR down (and trip the online guard) an attacker must be served
    lists, or post clicks: without a key neither leaves a trace the guard reads."""
    from recsys.data import impressions

    start = dt.datetime.now(dt.UTC)
    with TestClient(create_app(served, poll_seconds=0, serving=STRICT)) as client:
        for n in range(200):
            assert client.get(f"/recommendations/u{n % 5}").status_code == 401
            click = {**_click(f"u{n % 5}"), "request_id": f"forged-{n}"}
            assert client.post("/events", json=click).status_code == 401
        assert client.app.state.impressions.flush()
        end = dt.datetime.now(dt.UTC)
        assert impressions.read(client.app.state.store.engine, start, end) == []
    assert impressions.ctr_by_version(served.event_store_url, start, end) == {}
    assert events.EventStore(served.event_store_url).count() == 0
