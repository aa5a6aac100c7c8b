"""The HTTP API against a real registry (MLflow on SQLite) and event store."""

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from recsys import collect, events, features, pipeline, promote, synthetic, validate
from recsys.config import CHAMPION, PipelineConfig, TrainConfig
from recsys.lake import Interval
from recsys.registry import Registry
from recsys.serve import create_app

pytestmark = pytest.mark.slow

CFG = PipelineConfig(train=TrainConfig(epochs=10))
START = dt.datetime(2024, 1, 1)


def _ingest(settings, days):
    for d in days:
        iv = Interval(START + dt.timedelta(days=d), START + dt.timedelta(days=d + 1))
        collect.run(settings, iv)
        assert validate.run(settings, iv)["success"]
        features.run(settings, iv)


def _release(settings, mode):
    trained = pipeline.train(settings, mode, CFG)
    pipeline.evaluate(settings, trained["run_id"], CFG)
    return pipeline.register(settings, trained["run_id"])["version"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A champion (v1) and a second registered version (v2), built once for the module."""
    from recsys.config import Settings

    home = tmp_path_factory.mktemp("serve")
    settings = Settings.from_env({"RECSYS_HOME": str(home)})
    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(synthetic.generate(n_users=80, n_items=60, days=3)))
    _ingest(settings, [0, 1])
    v1 = _release(settings, "full")
    promote.run(settings, v1, CFG)
    _ingest(settings, [2])
    v2 = _release(settings, "full")
    return settings, v1, v2


@pytest.fixture
def client(served):
    settings, v1, _ = served
    Registry(settings).set_alias(CHAMPION, v1)
    with TestClient(create_app(settings, poll_seconds=0)) as c:
        yield c


def test_recommendations_exclude_seen_items_and_name_the_model(client, served):
    settings, v1, _ = served
    resp = client.get("/recommendations/u1", params={"k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == v1
    items = [r["item_id"] for r in body["items"]]
    assert len(items) == 5 and len(set(items)) == 5
    seen = set(events.EventStore(settings.event_store_url).history("u1", limit=10_000))
    assert not seen & set(items)
    scores = [r["score"] for r in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_is_404_with_a_reason(client):
    resp = client.get("/recommendations/nobody")
    assert resp.status_code == 404
    assert "unknown user 'nobody'" in resp.json()["detail"]


@pytest.mark.parametrize("query", [{"k": 0}, {"k": 101}, {"k": "ten"}, {"exclude_seen": "maybe"}])
def test_bad_parameters_are_422(client, query):
    resp = client.get("/recommendations/u1", params=query)
    assert resp.status_code == 422
    assert resp.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"item_id": "i1"},
        {"user_id": "", "item_id": "i1"},
        {"user_id": "u1", "item_id": "i1", "event_type": "teleport"},
        {"user_id": "u1", "item_id": "i1", "event_time": "not a time"},
    ],
)
def test_malformed_events_are_422(client, body):
    assert client.post("/events", json=body).status_code == 422


def test_a_new_event_changes_the_next_recommendations(client):
    before = [r["item_id"] for r in client.get("/recommendations/u1?k=10").json()["items"]]
    posted = client.post(
        "/events", json={"user_id": "u1", "item_id": before[0], "event_type": "click"}
    )
    assert posted.status_code == 201 and posted.json()["stored"]
    after = [r["item_id"] for r in client.get("/recommendations/u1?k=10").json()["items"]]
    assert before[0] not in after  # now seen, so excluded
    assert after != before


def test_posting_the_same_event_id_twice_stores_it_once(client, served):
    settings, _, _ = served
    store = events.EventStore(settings.event_store_url)
    body = {"user_id": "u2", "item_id": "i3", "event_id": "client-42"}
    before = store.count()
    first, second = client.post("/events", json=body), client.post("/events", json=body)
    assert first.json()["stored"] and second.json()["duplicate"]
    assert store.count() == before + 1


def test_a_new_user_gets_answers_after_their_first_event(client):
    assert client.get("/recommendations/newbie").status_code == 404
    client.post("/events", json={"user_id": "newbie", "item_id": "i5"})
    resp = client.get("/recommendations/newbie?k=3")
    assert resp.status_code == 200 and len(resp.json()["items"]) == 3


def test_switches_model_version_after_the_alias_moves(client, served):
    settings, v1, v2 = served
    assert client.get("/health").json()["model_version"] == v1
    Registry(settings).set_alias(CHAMPION, v2)
    assert client.app.state.holder.refresh() is True  # what the poller does every few seconds
    assert client.get("/recommendations/u1").json()["model_version"] == v2
    assert client.get("/health").json()["reloads"] == 2
