"""The HTTP API against a real registry (MLflow on SQLite) and event store (SQLite, then
PostgreSQL), and what each release (train, evaluate, register) leaves on its MLflow run page and
model version."""

import dataclasses
import datetime as dt
import json
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from fastapi.testclient import TestClient

from recsys.config import CHAMPION, PipelineConfig, ServingConfig, TrainConfig
from recsys.data import events, features, impressions, synthetic
from recsys.registry.client import Registry
from recsys.release import pipeline, promote
from recsys.serving.app import create_app
from tests.helpers.pipeline import ingest_days
from tests.helpers.serving import OPEN, keyed_client, scrape

pytestmark = pytest.mark.slow

CFG = PipelineConfig(train=TrainConfig(epochs=10))


def _release(settings, mode):
    trained = pipeline.train(settings, mode, CFG)
    pipeline.evaluate(settings, trained["run_id"], CFG)
    return pipeline.register(settings, trained["run_id"])["version"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, module_store_url):
    """A champion (v1) and a second registered version (v2), built once for the module, with
    the event store on each backend."""
    from recsys.config import Settings

    home = tmp_path_factory.mktemp("serve")
    settings = Settings.from_env(
        {"RECSYS_HOME": str(home), "RECSYS_EVENT_STORE_URL": module_store_url}
    )
    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(synthetic.generate(n_users=80, n_items=60, days=3)))
    ingest_days(settings, [0, 1])
    v1 = _release(settings, "full")
    promote.run(settings, v1, CFG)
    ingest_days(settings, [2])
    v2 = _release(settings, "full")
    return settings, v1, v2


@pytest.fixture
def client(served):
    settings, v1, _ = served
    Registry(settings).set_alias(CHAMPION, v1)
    with TestClient(create_app(settings, poll_seconds=0, serving=OPEN)) as c:
        yield c


def _items(resp, source=None):
    return [r["item_id"] for r in resp.json()["items"] if source in (None, r["source"])]


def test_recommendations_exclude_seen_items_and_name_the_model(client, served):
    settings, v1, _ = served
    resp = client.get("/recommendations/u1", params={"k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == v1 and body["user_id"] == "u1" and not body["cold_start"]
    assert resp.headers["X-Request-ID"] == body["request_id"]
    assert resp.headers["X-Model-Version"] == v1
    items = _items(resp)
    assert len(items) == 5 and len(set(items)) == 5
    seen = set(events.EventStore(settings.event_store_url).history("u1", limit=10_000))
    assert not seen & set(items)
    ranked = [r for r in body["items"] if r["source"] == "model"]
    assert len(ranked) >= 4  # at most round(5 x 0.1) = 1 slot explores
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert client.get("/recommendations/u1").json()["request_id"] != body["request_id"]


def test_every_list_is_exactly_the_documented_response(client):
    from recsys.serving.schemas import RecommendationsOut

    answers = [
        client.get("/recommendations/u1", params={"k": 5}),  # ranked by the model
        client.get("/recommendations/nobody"),  # cold start: popular items, counts as scores
        client.post("/recommendations", json={"items": ["i1", "i2"], "user_id": "anon"}),
    ]
    for resp in answers:
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        body = resp.json()
        assert RecommendationsOut.model_validate(body).model_dump(mode="json") == body
        assert all(isinstance(r["score"], float | None) for r in body["items"])
    schema = client.get("/openapi.json").json()["paths"]
    for path, method in (("/recommendations/{user_id}", "get"), ("/recommendations", "post")):
        content = schema[path][method]["responses"]["200"]["content"]["application/json"]
        assert content["schema"]["$ref"].endswith("/RecommendationsOut")


def test_an_unknown_user_gets_the_trending_list_flagged_as_cold_start(client, served):
    _, v1, _ = served
    resp = client.get("/recommendations/nobody", params={"k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["cold_start"] and body["model_version"] == v1
    popular = [r for r in body["items"] if r["source"] == "popular"]
    expected = client.app.state.popularity.popular(5, exclude=set())
    assert [r["item_id"] for r in popular] == [item for item, _, _ in expected][: len(popular)]
    assert len(body["items"]) == 5 and popular[0]["score"] >= popular[-1]["score"] >= 0


def test_a_new_user_gets_model_answers_after_their_first_event(client):
    assert client.get("/recommendations/newbie").json()["cold_start"]
    client.post("/events", json={"user_id": "newbie", "item_id": "i5"})
    resp = client.get("/recommendations/newbie?k=3")
    assert resp.status_code == 200 and len(resp.json()["items"]) == 3
    assert not resp.json()["cold_start"] and "i5" not in _items(resp)


def test_an_anonymous_session_is_ranked_from_the_items_it_sends(client):
    resp = client.post("/recommendations", json={"items": ["i1", "i2", "i3"], "k": 4})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user_id"] is None and not body["cold_start"] and len(body["items"]) == 4
    assert not {"i1", "i2", "i3"} & set(_items(resp))
    unseen = client.post("/recommendations", json={"items": ["i1"], "exclude_seen": False})
    assert len(unseen.json()["items"]) == 10
    for items in ([], ["brand-new-item"]):  # nothing the model knows: the trending list
        assert client.post("/recommendations", json={"items": items}).json()["cold_start"]


def test_a_new_item_is_explored_never_an_error(served):
    settings, v1, _ = served
    Registry(settings).set_alias(CHAMPION, v1)
    explore_all = dataclasses.replace(OPEN, exploration_share=1.0)  # every slot to a new item
    with TestClient(create_app(settings, poll_seconds=0, serving=explore_all)) as c:
        for user in ("u3", "u4"):
            posted = {"user_id": user, "item_id": "brand-new-item", "event_type": "purchase"}
            assert c.post("/events", json=posted).status_code == 201
        c.app.state.popularity.refresh()  # what the poller does every minute
        new, _ = c.app.state.popularity.new_items(v1, c.app.state.holder.current.recommender)
        assert "brand-new-item" in new
        resp = c.get("/recommendations/u1", params={"k": 100})
        assert resp.status_code == 200, resp.text
        explored, seen = _items(resp, "explore"), set(c.app.state.store.history("u1", 200))
        assert "brand-new-item" in explored and explored
        assert set(explored) == set(new) - seen  # k=100 > len(new): all new items u1 has not seen
        assert all(r["score"] is None for r in resp.json()["items"] if r["source"] == "explore")
        # a user whose only item is new to the model is a cold start, not an error
        assert c.get("/recommendations/u3-twin").status_code == 200
        c.post("/events", json={"user_id": "u3-twin", "item_id": "brand-new-item"})
        twin = c.get("/recommendations/u3-twin", params={"k": 100}).json()
        assert twin["cold_start"] and "brand-new-item" not in [r["item_id"] for r in twin["items"]]


def test_a_new_event_changes_the_next_recommendations(client):
    before = _items(client.get("/recommendations/u1?k=10"))
    posted = client.post(
        "/events", json={"user_id": "u1", "item_id": before[0], "event_type": "click"}
    )
    assert posted.status_code == 201 and posted.json()["stored"]
    after = _items(client.get("/recommendations/u1?k=10"))
    assert before[0] not in after  # now seen, so excluded
    assert after != before


def test_a_just_posted_event_counts_even_before_the_store_returns_it(client, monkeypatch):
    store = client.app.state.store
    stale = store.history_rows("u7", 10_000)  # what a lagging replica would still return
    monkeypatch.setattr(store, "history_rows", lambda user, limit: stale[-limit:])
    top = _items(client.get("/recommendations/u7?k=10"), "model")[0]
    assert client.post("/events", json={"user_id": "u7", "item_id": top}).json()["stored"]
    assert top not in _items(client.get("/recommendations/u7?k=10"))  # from the recent cache


def test_posting_the_same_event_id_twice_stores_it_once(client, served):
    settings, _, _ = served
    store = events.EventStore(settings.event_store_url)
    body = {"user_id": "u2", "item_id": "i3", "event_id": "client-42"}
    before = store.count()
    first, second = client.post("/events", json=body), client.post("/events", json=body)
    assert first.json()["stored"] and second.json()["duplicate"]
    assert store.count() == before + 1


def test_a_locked_event_store_is_a_503_to_retry_never_a_500(client, served):
    """Under write load SQLite answers "database is locked" after its busy timeout; PostgreSQL
    cancels the insert at the serving statement timeout: the event is not stored, and the client
    is told to send it again (bench/load.py found 500s)."""
    import sqlalchemy as sa

    settings, _, _ = served
    store = events.EventStore(settings.event_store_url)
    col = events.events_table.c.event_id
    body = {"user_id": "u3", "item_id": "i4", "event_id": "locked-1"}

    def stored() -> list:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(col).where(col == "locked-1")).scalars().all()

    with store.engine.connect() as conn:  # another writer holds the database
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
        else:
            conn.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        resp = client.post("/events", json=body)
        conn.rollback()
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] and "retry" in resp.json()["detail"]
    assert stored() == []
    again = client.post("/events", json=body)  # the retry, same event id
    assert again.status_code == 201 and again.json()["stored"]
    assert stored() == ["locked-1"]


def test_a_served_list_is_an_impression_and_its_click_is_joined(served):
    settings, v1, _ = served
    Registry(settings).set_alias(CHAMPION, v1)
    start = dt.datetime.now(dt.UTC)
    with keyed_client(settings) as client:
        resp = client.get("/recommendations/u5", params={"k": 5})
        request_id, items = resp.json()["request_id"], _items(resp)
        assert resp.headers["X-Request-ID"] == request_id
        clicked = {"user_id": "u5", "item_id": items[1], "event_type": "click"}
        posted = client.post("/events", json={**clicked, "request_id": request_id})
        assert posted.status_code == 201 and posted.json()["request_id"] == request_id
        # The request id is signed and bound to u5: another user's, a forged or a replayed
        # click on it is refused, and never joined.
        foreign = client.post(
            "/events", json={**clicked, "user_id": "u6", "request_id": request_id}
        )
        assert foreign.status_code == 422 and "forged or foreign" in foreign.text
        forged = request_id[:-4] + ("AAAA" if not request_id.endswith("AAAA") else "BBBB")
        assert client.post("/events", json={**clicked, "request_id": forged}).status_code == 422
        made_up = client.post("/events", json={**clicked, "request_id": "r-123"})
        assert made_up.status_code == 422 and "not a request id" in made_up.text
        replay = client.post("/events", json={**clicked, "request_id": request_id})
        assert replay.status_code == 422 and "already answered" in replay.text
        retry = client.post("/events", json={**clicked, "request_id": request_id,
                                            "event_id": posted.json()["event_id"]})  # fmt: skip
        assert retry.status_code == 201 and retry.json()["duplicate"]  # a retry, not a replay
        assert client.app.state.impressions.flush(10)
        end = dt.datetime.now(dt.UTC)
        (shown,) = impressions.read(client.app.state.store.engine, start, end)
    assert shown.request_id == request_id and shown.user_id == "u5"
    assert shown.model_version == v1 and list(shown.items) == items and not shown.cold_start
    ctr = impressions.ctr_by_version(settings.event_store_url, start, end)
    assert ctr == {
        v1: {"model_version": v1, "impressions": 1, "clicked": 1, "clicks": 1, "ctr": 1.0}
    }


def test_impressions_queued_at_shutdown_are_written(served):
    settings, v1, _ = served
    Registry(settings).set_alias(CHAMPION, v1)
    start = dt.datetime.now(dt.UTC)
    with TestClient(create_app(settings, poll_seconds=0, serving=OPEN)) as c:
        ids = [c.get(f"/recommendations/u{n}").json()["request_id"] for n in range(1, 6)]
    engine = events.EventStore(settings.event_store_url).engine
    shown = impressions.read(engine, start, dt.datetime.now(dt.UTC))
    assert set(ids) <= {imp.request_id for imp in shown}


BAD_EVENTS = [
    {"item_id": "i1"},
    {"user_id": "", "item_id": "i1"},
    {"user_id": "u1", "item_id": "i1", "event_type": "teleport"},
    {"user_id": "u1", "item_id": "i1", "event_time": "not a time"},
    {"user_id": "u1", "item_id": "i1", "event_time": "2999-01-01T00:00:00Z"},
    {"user_id": "u1", "item_id": "i1", "event_type": "rating"},  # a rating needs a value
    {"user_id": "u1", "item_id": "i1", "value": "lots"},
    {"user_id": "u1", "item_id": "x" * 129},
    {"user_id": 7, "item_id": "i1"},
    {"user_id": ["u1"], "item_id": "i1"},
    {"user_id": "u1", "item_id": "i1", "request_id": "../etc/passwd"},
    {"user_id": "u1", "item_id": "i1", "colour": "red"},  # unknown fields are refused
]
BAD_SESSIONS = [
    {"items": "i1"},
    {"items": [1, 2]},
    {"items": [""]},
    {"items": ["i1"] * 201},
    {"items": [["i1"]]},
    {"k": 0},
    {"k": 101},
    {"k": "ten"},
    {"items": ["i1"], "exclude_seen": "maybe"},
    {"items": ["i1"], "user": "typo"},
]
RAW = ["", "{", "[]", "null", '"i1"', '{"user_id": "u1", "item_id": "i1", "value": NaN}']


@pytest.mark.parametrize("query", [{"k": 0}, {"k": 101}, {"k": "ten"}, {"exclude_seen": "maybe"}])
def test_bad_parameters_are_422(client, query):
    resp = client.get("/recommendations/u1", params=query)
    assert resp.status_code == 422
    assert resp.json()["detail"]


def test_recommendation_parameters_are_validated_and_documented_as_fastapi_does(client):
    long_user = "u" * 129
    resp = client.get(f"/recommendations/{long_user}", params={"k": "x", "exclude_seen": "2"})
    assert resp.status_code == 422
    assert [(e["loc"], e["type"], e["input"]) for e in resp.json()["detail"]] == [
        (["path", "user_id"], "string_too_long", long_user),
        (["query", "k"], "int_parsing", "x"),
        (["query", "exclude_seen"], "bool_parsing", "2"),
    ]
    (error,) = client.get("/recommendations/u1", params={"k": 101}).json()["detail"]
    assert error["ctx"] == {"le": 100} and error["msg"].startswith("Input should be less")
    queries = ({"k": "3"}, {"k": "1.0"}, {"k": ["9", "2"]}, {"exclude_seen": "NO", "k": 4})
    lists = [client.get("/recommendations/u1", params=q).json()["items"] for q in queries]
    assert [len(items) for items in lists] == [3, 1, 2, 4]  # lax as FastAPI: the last k counts
    op = client.get("/openapi.json").json()["paths"]["/recommendations/{user_id}"]["get"]
    params = {p["name"]: (p["in"], p["required"], p["schema"]) for p in op["parameters"]}
    assert params["user_id"][:2] == ("path", True) and params["user_id"][2]["maxLength"] == 128
    assert params["k"] == (
        "query", False, {"type": "integer", "minimum": 1, "maximum": 100, "default": 10,
                         "title": "K"},
    )  # fmt: skip
    assert params["exclude_seen"][:2] == ("query", False)
    assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HTTPValidationError"
    )


@pytest.mark.parametrize("body", BAD_EVENTS)
def test_malformed_events_are_422(client, body):
    resp = client.post("/events", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["msg"]  # says what is wrong


@pytest.mark.parametrize("body", BAD_SESSIONS)
def test_malformed_sessions_are_422(client, body):
    assert client.post("/recommendations", json=body).status_code == 422


@pytest.mark.parametrize("path", ["/events", "/recommendations"])
@pytest.mark.parametrize("raw", RAW)
def test_malformed_json_is_422_never_500(client, path, raw):
    resp = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text


def test_oversized_requests_are_refused(client):
    assert client.get("/recommendations/" + "u" * 129).status_code == 422
    huge = {"items": ["i1"] * 20_000}  # ~140 kB > max_body_bytes
    resp = client.post("/recommendations", json=huge)
    assert resp.status_code == 413 and "X-Request-ID" in resp.headers

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield b'{"items": ['
        for _ in range(20_000):
            yield b'"i1",'
        yield b'"i1"]}'

    assert client.post("/recommendations", content=chunks()).status_code == 413
    assert client.post("/recommendations", json={"items": ["i1"]}).status_code == 200


def test_switches_model_version_after_the_alias_moves(client, served):
    settings, v1, v2 = served
    assert client.get("/health").json()["model_version"] == v1
    Registry(settings).set_alias(CHAMPION, v2)
    assert client.app.state.holder.refresh() is True  # what the poller does every few seconds
    assert client.get("/recommendations/u1").json()["model_version"] == v2
    assert client.get("/health").json()["reloads"] == 2


def test_health_shows_the_live_models_lag_behind_the_newest_validated_data(client, served):
    settings, v1, v2 = served
    reg = Registry(settings)
    newest = dt.datetime.fromisoformat(features.load(settings).manifest["last_ingested_at"])
    trained_to = dt.datetime.fromisoformat(reg.version(v1).tags["recsys.data_last_ingested_at"])
    lag = (newest - trained_to).total_seconds() / 3600
    assert lag > 12  # v1 was trained before day 2 was ingested
    fresh = client.get("/health").json()["freshness"]
    assert fresh["version"] == v1 and fresh["lag_hours"] == pytest.approx(lag, abs=0.01)
    assert dt.datetime.fromisoformat(fresh["newest_data"]) == newest
    assert fresh["max_lag_hours"] == 48.0
    assert fresh["ok"] is True
    reg.set_alias(CHAMPION, v2)  # trained on everything validated so far
    assert client.app.state.holder.refresh() is True
    fresh = client.get("/health").json()["freshness"]
    assert (fresh["version"], fresh["lag_hours"], fresh["ok"]) == (v2, 0.0, True)


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_alias_move_under_load_fails_no_request(client, served):
    settings, v1, v2 = served
    stop, answers = threading.Event(), []

    def hammer(n: int) -> None:
        while not stop.is_set():
            if n % 2:
                resp = client.get(f"/recommendations/u{n}", params={"k": 5})
            else:
                resp = client.post("/recommendations", json={"items": ["i1", f"i{n}"]})
            answers.append((n, resp.status_code, resp.json().get("model_version")))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    try:
        _wait_for(lambda: len(answers) >= 20)
        Registry(settings).set_alias(CHAMPION, v2)
        assert client.app.state.holder.refresh() is True
        swapped = len(answers)
        _wait_for(lambda: len(answers) >= swapped + 20)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert {status for _, status, _ in answers} == {200}
    assert {version for _, _, version in answers} == {v1, v2}
    for n in range(1, 5):  # every thread ends on the new model
        assert [version for m, _, version in answers if m == n][-1] == v2


def test_a_registry_outage_keeps_serving_and_shows_in_health(client, served, monkeypatch):
    settings, v1, v2 = served
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    holder = client.app.state.holder
    holder.settings = dataclasses.replace(settings, tracking_uri="http://127.0.0.1:9")
    try:
        assert holder.refresh() is False
    finally:
        holder.settings = settings
        Registry(settings)  # points mlflow back at the real registry
    resp = client.get("/recommendations/u1")
    assert resp.status_code == 200 and resp.json()["model_version"] == v1
    health = client.get("/health").json()
    assert health["status"] == "degraded" and health["last_error"]
    assert health["reload_errors"] == 1 and health["model_version"] == v1
    assert client.get("/ready").json() == {"ready": True, "model_version": v1, "event_store": "up"}
    # a version that fails to load is not swapped in either
    Registry(settings).set_alias(CHAMPION, v2)
    broken = mock.Mock(side_effect=RuntimeError("corrupt checkpoint"))
    monkeypatch.setattr("recsys.serving.champion.Recommender.load", broken)
    assert holder.refresh() is False and broken.called
    assert client.get("/recommendations/u1").json()["model_version"] == v1
    assert "corrupt checkpoint" in client.get("/health").json()["last_error"]
    monkeypatch.undo()
    assert holder.refresh() is True and client.get("/health").json()["last_error"] is None


def test_not_ready_without_a_model(served, monkeypatch):
    settings, _, _ = served
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    unreachable = dataclasses.replace(settings, tracking_uri="http://127.0.0.1:9")
    try:
        with TestClient(create_app(unreachable, poll_seconds=0, serving=OPEN)) as c:
            assert c.get("/health").status_code == 200
            assert c.get("/ready").status_code == 503
            assert c.get("/recommendations/u1").status_code == 503
            assert scrape(c.get("/metrics").text)["recsys_model_loaded"] == 0
    finally:
        Registry(settings)


def test_metrics_are_prometheus_text(client, served):
    _, v1, _ = served
    client.get("/recommendations/u1")
    client.get("/recommendations/u1")  # the same history again: its state is cached
    client.get("/recommendations/nobody-at-all")
    client.post("/events", json={"item_id": "i1"})
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    got = scrape(resp.text)
    assert "# TYPE recsys_http_request_duration_seconds histogram" in resp.text
    route = 'route="/recommendations/{user_id}"'
    assert got[f'recsys_http_requests_total{{method="GET",{route},status="200"}}'] == 3
    assert got['recsys_http_requests_total{method="POST",route="/events",status="422"}'] == 1
    assert got[f'recsys_http_request_duration_seconds_bucket{{le="+Inf",{route}}}'] == 3
    assert got[f"recsys_http_request_duration_seconds_count{{{route}}}"] == 3
    version = f'{{version="{v1}"}}'
    assert got[f"recsys_model_info{version}"] == 1
    assert got["recsys_model_loaded"] == 1 and got["recsys_model_reloads_total"] == 1
    assert got["recsys_model_reload_errors_total"] == 0 and got["recsys_http_errors_total"] == 0
    assert got["recsys_cold_start_total"] == 1 and got["recsys_model_lists_total"] == 2
    assert got[f"recsys_state_cache_hits_total{version}"] == 1
    # Two ran the model: the warm-up of the load, and u1's first answer.
    assert got[f"recsys_state_cache_misses_total{version}"] == 2
    assert got[f"recsys_state_cache_entries{version}"] == 2
    # The process's own, from prometheus_client: memory, CPU, GC.
    assert got["process_resident_memory_bytes"] > 10 * 2**20 and "process_cpu_seconds_total" in got
    assert 'python_gc_collections_total{generation="0"}' in got


# -- the run page and the model version of each release ------------------------------------------
def _artifact(settings, run_id, path, tmp_path):
    import mlflow

    Registry(settings)  # points mlflow at the settings' tracking URI
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(tmp_path)
        )
    )


def test_the_run_page_compares_the_model_with_every_baseline(served, tmp_path):
    from recsys.evaluation.baselines import FITTERS

    settings, v1, _ = served
    reg = Registry(settings)
    run_id = reg.version(v1).run_id
    metrics = reg.run(run_id).data.metrics
    assert reg.run(run_id).data.tags["baseline.skipped"] == "none"  # 60 items: all affordable
    for name in FITTERS:
        for key in ("hr_at_10", "ndcg_at_10", "mrr", "coverage_at_10", "novelty_at_10"):
            assert f"baseline.{name}.{key}" in metrics
    for key in ("coverage_at_10", "novelty_at_10", "arp_at_10"):
        assert f"test.{key}" in metrics
    assert metrics["baseline.popularity.ndcg_at_10"] == pytest.approx(
        metrics["popularity.ndcg_at_10"]
    )

    table = json.loads(_artifact(settings, run_id, "comparison.json", tmp_path).read_text())
    rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}
    assert list(rows) == ["sasrec (this run)", *FITTERS]
    assert rows["sasrec (this run)"]["ndcg_at_10"] == pytest.approx(metrics["test.ndcg_at_10"])
    assert rows["ease"]["mrr"] == pytest.approx(metrics["baseline.ease.mrr"])
    markdown = _artifact(settings, run_id, "comparison.md", tmp_path).read_text()
    assert all(f"| {name} |" in markdown for name in rows)
    assert f"{metrics['test.hr_at_10']:.4f}" in markdown and "**" in markdown


def test_the_run_page_has_the_plots_with_their_numbers(served, tmp_path):
    settings, v1, _ = served
    reg = Registry(settings)
    run_id = reg.version(v1).run_id
    for name in ("learning_curve", "ndcg_by_history_length", "recommendation_popularity"):
        png = _artifact(settings, run_id, f"plots/{name}.png", tmp_path).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    curve = json.loads(
        _artifact(settings, run_id, "plots/learning_curve.json", tmp_path).read_text()
    )
    epochs = [row[curve["columns"].index("epoch")] for row in curve["data"]]
    logged = sorted(m.step for m in reg.client.get_metric_history(run_id, "train.loss"))
    assert epochs == logged and len(epochs) >= 2
    by_length = json.loads(
        _artifact(settings, run_id, "plots/ndcg_by_history_length.json", tmp_path).read_text()
    )
    n_users = sum(row[by_length["columns"].index("n_users")] for row in by_length["data"])
    assert n_users == reg.run(run_id).data.metrics["test.n_users"]


def test_evaluating_again_replaces_the_report_and_keeps_the_promotion_metric(served, tmp_path):
    from recsys.model.sasrec import Checkpoint

    settings, _, v2 = served
    reg = Registry(settings)
    run_id = reg.version(v2).run_id
    before = reg.run(run_id).data.metrics
    again = pipeline.evaluate(settings, run_id, CFG)  # an Airflow retry
    assert again["test.ndcg_at_10"] == pytest.approx(before["test.ndcg_at_10"])
    table = json.loads(_artifact(settings, run_id, "comparison.json", tmp_path).read_text())
    assert len(table["data"]) == len({row[0] for row in table["data"]})  # replaced, not appended
    # promotion re-scores champions with evaluate_checkpoint: it must agree with test.*
    fs = features.load(settings, reg.run(run_id).data.tags[pipeline.TAG_FEATURES])
    ckpt = Checkpoint.load(reg.version_checkpoint(v2, tmp_path))
    rescored = pipeline.evaluate_checkpoint(ckpt, pipeline.split_of(fs, CFG), fs.n_items, 10)
    assert rescored["ndcg_at_10"] == pytest.approx(before["test.ndcg_at_10"])


def test_registered_versions_have_a_signature_and_a_working_input_example(served):
    import mlflow

    settings, v1, _ = served
    Registry(settings)
    uri = f"models:/{settings.registered_model}/{v1}"
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None
    assert info.signature.inputs.input_names() == ["history"]
    assert info.signature.outputs.input_names() == ["recommendations"]
    assert info.saved_input_example_info is not None
    model = mlflow.pyfunc.load_model(uri)
    example = model.input_example
    known = set(model.unwrap_python_model().recommender.item_ids)
    assert len(example) == 2 and all(0 < len(h) and set(h) <= known for h in example["history"])
    out = model.predict(example, params={"k": 3})
    assert [len(recs) for recs in out["recommendations"]] == [3, 3]
    for history, recs in zip(example["history"], out["recommendations"], strict=True):
        assert set(recs) <= known and not set(recs) & set(history)


def test_the_server_freezes_what_it_loaded_before_it_starts(served, monkeypatch):
    import gc

    from recsys.serving import app as serving

    settings, v1, _ = served
    Registry(settings).set_alias(CHAMPION, v1)
    apps, seen = [], {}
    create_app, freeze = serving.create_app, gc.freeze

    def app_of(*args, **kwargs):
        apps.append(create_app(*args, **kwargs))
        return apps[-1]

    def freeze_after_loading():  # what the champion and the trending list are at the freeze
        state = apps[0].state
        seen["model"] = state.holder.current and state.holder.current.version
        seen["trending"] = len(state.popularity.popular(5, exclude=set()))
        freeze()

    def run(app, **kwargs):
        seen["frozen"], seen["loop"] = gc.get_freeze_count(), kwargs["loop"]

    monkeypatch.setattr(serving, "create_app", app_of)
    monkeypatch.setattr("gc.freeze", freeze_after_loading)
    monkeypatch.setattr("uvicorn.run", run)
    gc.unfreeze()
    try:
        serving.serve(settings, serving=ServingConfig(torch_threads=0))  # 0: torch's threads be
    finally:
        gc.unfreeze()
    assert seen.pop("frozen") > 10_000
    assert seen == {"model": v1, "trending": 5, "loop": "asyncio"}


@pytest.mark.parametrize(
    ("flags", "loop", "access_log"),
    [([], "asyncio", False), (["--loop", "uvloop", "--access-log"], "uvloop", True)],
)
def test_serve_flags_choose_the_event_loop_and_the_access_log(
    settings, monkeypatch, flags, loop, access_log
):
    from recsys.cli import main

    seen = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: seen.update(kwargs))
    monkeypatch.setattr("gc.freeze", lambda: None)  # leave this test process's collector be
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # and its torch threads
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    main(["serve", "--port", "8123", *flags])
    assert (seen["port"], seen["loop"], seen["access_log"]) == (8123, loop, access_log)
