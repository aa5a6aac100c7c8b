"""Gate evidence is measured through the serving class and agrees with offline evaluation."""

import dataclasses

import numpy as np
import pytest

from recsys.data.splits import leave_last_out
from recsys.evaluation.metrics import evaluate_model
from recsys.model.recommender import Recommender
from recsys.model.sasrec import build_model
from recsys.release.evidence import gather, latency_p95_ms, latency_sample, smoke
from recsys.release.gate import GateConfig, ndcg_per_user
from recsys.training.loop import train
from tests.helpers.training import MODEL, N_ITEMS, TRAIN, walks

ITEM_IDS = [f"item-{i}" for i in range(1, N_ITEMS + 1)]


@pytest.fixture(scope="module")
def setup():
    sequences = walks(120, N_ITEMS, seed=2)
    sequences[0] = sequences[0][:4]  # a cold user: 4 events
    split = leave_last_out(sequences)
    result = train(split, N_ITEMS, MODEL, dataclasses.replace(TRAIN, epochs=5))
    return split, Recommender(result.checkpoint, ITEM_IDS)


def test_gathered_ranks_match_offline_evaluation(setup):
    split, rec = setup
    ev = gather(rec, split, ITEM_IDS, GateConfig())
    offline = evaluate_model(build_model(rec.checkpoint), split, N_ITEMS, k=10)
    assert ndcg_per_user(ev.ranks, 10).mean() == pytest.approx(offline["ndcg_at_10"])
    assert len(ev.ranks) == offline["n_users"]
    lengths = np.array([len(c) + 1 for c in split.test_context])
    assert len(ev.cold_ranks) == int((lengths <= 5).sum()) >= 1
    assert 0 < ev.coverage <= 1 and ev.smoke_ok
    assert ev.p95_ms != ev.p95_ms  # NaN: the caller times the models it compares together


def test_latency_is_timed_for_each_model_in_one_interleaved_pass(setup):
    split, rec = setup
    calls = []

    class Counting(Recommender):
        def recommend(self, history, k=10, exclude_seen=True):
            calls.append(self.tag)
            return super().recommend(history, k, exclude_seen)

    a, b = Counting(rec.checkpoint, ITEM_IDS), Counting(rec.checkpoint, ITEM_IDS)
    a.tag, b.tag = "a", "b"
    histories = latency_sample(split, ITEM_IDS, seed=0, n=20)
    p95 = latency_p95_ms([a, b], histories, k=10, warmup=2)
    assert len(p95) == 2 and all(t > 0 for t in p95)
    timed = calls[4:]  # after 2 warm-up requests each
    assert timed[:4] == ["a", "b", "b", "a"] and len(timed) == 40


def test_smoke_reports_a_broken_model_instead_of_raising(setup):
    _, rec = setup
    assert smoke(rec, ITEM_IDS[:3], k=10) == ""
    state = {k: v.clone() for k, v in rec.checkpoint.model_state.items()}
    state["item_emb.weight"][1:] = float("nan")  # a diverged training
    nan_model = Recommender(dataclasses.replace(rec.checkpoint, model_state=state), ITEM_IDS)
    assert smoke(nan_model, ITEM_IDS[:3], k=10) != ""

    class Exploding(Recommender):
        def recommend(self, history, k=10, exclude_seen=True):
            raise KeyError("item_ids")

    exploding = Exploding(rec.checkpoint, ITEM_IDS)
    assert smoke(exploding, ITEM_IDS[:3], k=10) == "KeyError: 'item_ids'"
    ev = gather(exploding, setup[0], ITEM_IDS, GateConfig())
    assert not ev.smoke_ok and "KeyError" in ev.smoke_error
