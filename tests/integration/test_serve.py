"""The HTTP API against a real registry (MLflow on SQLite) and event store, and what each release
(train, evaluate, register) leaves on its MLflow run page and model version."""

import datetime as dt
import json
from pathlib import Path

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
    from recsys.baselines import FITTERS

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
    from recsys import features
    from recsys.model import Checkpoint

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
