"""An A/B test end to end, on SQLite and PostgreSQL: users split by a hash of their id between
champion and candidate, answers and impressions tagged with the arm, a simulated click-through
difference read out by ``recsys ab status`` and acted on by ``recsys ab conclude``."""

import json
import random

import pytest
from fastapi.testclient import TestClient

from recsys.cli import main
from recsys.config import CHAMPION
from recsys.data.impressions import impressions_table
from recsys.registry.alias_log import AliasConflict, AliasLog
from recsys.registry.client import Registry
from recsys.release import ab
from recsys.release.gate import DEFAULT_CONFIG
from tests.helpers.registry import STORED_MODEL, stored_champion
from tests.helpers.serving import keyed_client

pytestmark = pytest.mark.slow

CTR = {"champion": 0.10, "candidate": 0.40}  # the simulated users' true click-through rates


@pytest.fixture
def two_versions(backend_settings, tmp_path, monkeypatch):
    """The stored model registered twice: champion v1 and v2 to test against it; looks every
    100 impressions per arm, so a short simulated test reaches a decision."""
    config = DEFAULT_CONFIG.read_text().replace("look_impressions = 500", "look_impressions = 100")
    assert "look_impressions = 100" in config
    (tmp_path / "promotion.toml").write_text(config)
    monkeypatch.setenv("RECSYS_PROMOTION_CONFIG", str(tmp_path / "promotion.toml"))
    v1 = stored_champion(backend_settings, tmp_path)
    reg = Registry(backend_settings)
    v2 = str(reg.client.create_model_version(reg.name, source=STORED_MODEL.as_uri()).version)
    return backend_settings, v1, v2


def _simulate(client, users, seed=0):
    """Each user asks once and clicks the first item with their arm's true CTR."""
    rng = random.Random(seed)
    answers, client.clicked = {}, {arm: 0 for arm in ab.ARMS}
    for user in users:
        body = {"user_id": user, "items": ["i1", "i2", "i3"], "k": 5}
        answer = client.post("/recommendations", json=body).json()
        answers[user] = answer
        if rng.random() < CTR[answer["arm"]]:
            click = {"user_id": user, "item_id": answer["items"][0]["item_id"],
                     "event_type": "click", "request_id": answer["request_id"]}  # fmt: skip
            assert client.post("/events", json=click).status_code == 201
            client.clicked[answer["arm"]] += 1
    assert client.app.state.impressions.flush()
    return answers


def _flood_the_champion_arm(settings, client, answers):
    """An attacker clicks every champion-arm list, to make the champion win: without a key, with
    request ids forged or served to others, and by importing clicks. None of it may count."""
    import datetime as dt

    from recsys.data import events

    champion_lists = [a for a in answers.values() if a["arm"] == "champion"]
    anonymous = TestClient(client.app)  # the same server, no key
    forged_store = []
    for n, answer in enumerate(champion_lists):
        click = {"user_id": answer["user_id"], "item_id": answer["items"][0]["item_id"],
                 "event_type": "click", "request_id": answer["request_id"]}  # fmt: skip
        assert anonymous.post("/events", json=click).status_code == 401
        other = {**click, "user_id": f"attacker-{n}"}
        assert client.post("/events", json=other).status_code == 422
        tail = "yyy" if answer["request_id"].endswith("zzz") else "zzz"
        forged = {**click, "request_id": answer["request_id"][:-3] + tail}
        assert client.post("/events", json=forged).status_code == 422
        forged_store.append({**click, "event_id": f"imported-{n}",
                             "ingested_at": dt.datetime.now(dt.UTC)})  # fmt: skip
    events.EventStore(settings.event_store_url).append(events.prepare_rows(forged_store))


def test_an_ab_test_splits_by_user_reads_out_and_concludes(two_versions, capsys):
    settings, v1, v2 = two_versions
    assert ab.status(settings)["running"] is False
    with pytest.raises(ValueError, match="is the champion"):
        ab.start(settings, v1, "no test against itself")
    ab.start(settings, v2, "drill: does v2 click better?")
    reg = Registry(settings)
    v3 = str(reg.client.create_model_version(reg.name, source=STORED_MODEL.as_uri()).version)
    with pytest.raises(AliasConflict):  # moving candidate is compare-and-set, like champion
        ab.start(settings, v3, "a racing start decided against no candidate", expected=None)
    assert str(reg.alias(ab.CANDIDATE).version) == v2

    users = [f"user-{n}" for n in range(600)]
    with keyed_client(settings) as client:
        answers = _simulate(client, users)
        _flood_the_champion_arm(settings, client, answers)
        assert client.get("/health").json()["candidate_version"] == v2
        # The arm is the hash's, answered by that arm's version, the same on every request.
        for user, answer in answers.items():
            arm = ab.arm_of(user, 0.5, v2)
            assert answer["arm"] == arm
            assert answer["model_version"] == (v2 if arm == "candidate" else v1)
        again = client.post("/recommendations", json={"user_id": users[0], "items": ["i1"]})
        assert again.json()["arm"] == answers[users[0]]["arm"]
        anonymous = client.post("/recommendations", json={"items": ["i1"]}).json()
        assert anonymous["arm"] is None and anonymous["model_version"] == v1
        share = sum(a["arm"] == "candidate" for a in answers.values()) / len(users)
        assert 0.42 < share < 0.58

        # The impressions carry the arm.
        assert client.app.state.impressions.flush()
        with client.app.state.store.engine.connect() as conn:
            rows = conn.execute(impressions_table.select()).mappings().all()
        arms = {r["request_id"]: r["arm"] for r in rows}
        assert all(arms[a["request_id"]] == a["arm"] for a in answers.values())

        # recsys ab status: CTR per arm with intervals, and the sequential rule's decision.
        main(["ab", "status", "--json"])
        state = json.loads(capsys.readouterr().out)
        n_arm = {arm: sum(a["arm"] == arm for a in answers.values()) for arm in ab.ARMS}
        n_arm[answers[users[0]]["arm"]] += 1  # the repeated request
        for arm in ab.ARMS:
            got = state["arms"][arm]
            assert got["impressions"] == n_arm[arm]
            assert got["clicked"] == client.clicked[arm]  # the flood counted for nothing
            assert got["ctr_low"] < got["ctr"] < got["ctr_high"]
            assert got["ctr_low"] < CTR[arm] < got["ctr_high"]
        assert state["look"] == min(n_arm.values()) // 100 >= 2
        assert state["decision"] == ab.WIN and state["ctr_diff_low"] > 0
        main(["ab", "status"])
        text = capsys.readouterr().out
        assert (
            f"candidate v{v2} against champion v{v1}" in text and "decision: candidate wins" in text
        )

        # recsys ab conclude: the winner becomes champion, the test ends; serving follows.
        main(["ab", "conclude", "--json"])
        assert json.loads(capsys.readouterr().out)["action"] == "promoted"
        assert str(reg.alias(CHAMPION).version) == v2 and reg.alias(ab.CANDIDATE) is None
        log = AliasLog(settings.event_store_url)
        assert log.head(CHAMPION).to_version == v2 and "A/B test" in log.head(CHAMPION).reason
        assert log.head(ab.CANDIDATE).kind == "end" and log.head(ab.CANDIDATE).to_version is None
        client.app.state.holder.refresh()
        assert client.app.state.candidate.refresh() is True  # the candidate is let go
        after = client.post("/recommendations", json={"user_id": users[0], "items": ["i1"]})
        assert after.json()["arm"] is None and after.json()["model_version"] == v2
    assert ab.status(settings)["running"] is False


def test_a_losing_candidate_is_stopped_and_champion_stays(two_versions):
    settings, v1, v2 = two_versions
    ab.start(settings, v2, "drill: a worse candidate")
    CTR_SWAPPED = {"champion": 0.40, "candidate": 0.05}
    with keyed_client(settings) as client:
        rng = random.Random(1)
        for n in range(600):
            user = f"user-{n}"
            answer = client.post("/recommendations", json={"user_id": user, "items": ["i1"]}).json()
            if rng.random() < CTR_SWAPPED[answer["arm"]]:
                click = {"user_id": user, "item_id": answer["items"][0]["item_id"],
                         "event_type": "click", "request_id": answer["request_id"]}  # fmt: skip
                client.post("/events", json=click)
        assert client.app.state.impressions.flush()
    result = ab.conclude(settings)
    assert result["decision"] == ab.LOSE and result["action"] == "stopped"
    reg = Registry(settings)
    assert str(reg.alias(CHAMPION).version) == v1 and reg.alias(ab.CANDIDATE) is None
