"""The serving class: same scores as evaluation, batched; exploration blending, seeded."""

import numpy as np
import pytest
import torch

from recsys.config import ModelConfig
from recsys.model.recommender import (
    EXPLORE,
    MODEL,
    Recommender,
    blend,
    exploration_slots,
    request_seed,
)
from recsys.model.sasrec import Checkpoint, SASRec, score_contexts

CFG = ModelConfig(max_len=8, d_model=16, n_layers=2, n_heads=2, dropout=0.0)
N_ITEMS = 20
IDS = [f"i{i}" for i in range(1, N_ITEMS + 1)]  # index i is "i{i}"
SEED_ABC = 15617099051652453721  # blake2b("abc", 8 bytes), big-endian


@pytest.fixture(scope="module")
def rec() -> Recommender:
    torch.manual_seed(0)
    model = SASRec(N_ITEMS, CFG).eval()
    ckpt = Checkpoint(model.state_dict(), CFG, N_ITEMS, {}, metadata={"item_ids": IDS})
    return Recommender(ckpt, list(IDS))


@pytest.mark.parametrize(
    "contexts",
    [[[1, 2, 3]], [[5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], []], [[]], [[7, 7, 7], [2]]],
)
def test_batched_unpadded_scores_equal_the_evaluated_ones(rec, contexts):
    expected = score_contexts(rec.model, contexts, N_ITEMS)  # padded to max_len
    got = rec.score(contexts)
    assert got.shape == expected.shape == (len(contexts), N_ITEMS + 1)
    assert np.isneginf(got[:, 0]).all()
    np.testing.assert_allclose(got[:, 1:], expected[:, 1:], rtol=1e-5, atol=1e-5)


def test_recommend_excludes_seen_ignores_unknown_and_matches_the_batch(rec):
    history = ["i3", "never-seen", "i5"]
    recs = rec.recommend(history, k=5)
    items = [item for item, _ in recs]
    assert len(items) == 5 and not {"i3", "i5"} & set(items)
    scores = [score for _, score in recs]
    assert scores == sorted(scores, reverse=True)
    batched = rec.recommend_many([history, ["i1"]], k=5)[0]
    assert [item for item, _ in batched] == items  # same list; scores equal up to float rounding
    assert [score for _, score in batched] == pytest.approx(scores, rel=1e-5)
    assert len(rec.recommend(history, k=5, exclude_seen=False)) == 5
    assert len(rec.recommend([], k=3)) == 3  # empty history still ranks (from padding only)
    assert len(rec.recommend(IDS, k=50)) == 0  # everything seen: nothing left to recommend


def test_state_cache_skips_the_model_for_a_repeated_history_only(rec, monkeypatch):
    cached = Recommender(rec.checkpoint, list(IDS), state_cache=2)
    rows_run: list[int] = []
    real = cached.model.last_hidden

    def counted(seqs):
        rows_run.append(len(seqs))
        return real(seqs)

    monkeypatch.setattr(cached.model, "last_hidden", counted)
    a, b = [3, 5], [1, 2, 3, 4]
    first = cached.score([a])
    np.testing.assert_array_equal(cached.score([a]), first)  # bit-identical: the same state
    assert rows_run == [1] and (cached.states.hits, cached.states.misses) == (1, 1)
    # A batch runs the model for the rows it does not hold, and scores like an uncached one.
    batch = cached.score([b, a, [99, 3, 5]])  # unknown items are dropped: that is history a
    assert rows_run == [1, 1]
    np.testing.assert_allclose(batch, rec.score([b, a, a]), rtol=1e-5, atol=1e-5)
    # A new event makes a new history: its own state, never the old one.
    longer = cached.score([[*a, 9]])
    assert rows_run == [1, 1, 1] and not np.allclose(longer, first)
    # Least recently used out: it holds 2, and [a, 9] pushed out a (b was stored after a's use).
    assert len(cached.states) == 2
    cached.score([b])
    assert rows_run == [1, 1, 1]
    cached.score([a])
    assert rows_run == [1, 1, 1, 1]
    assert cached.recommend(["i3", "i5"], k=3) == rec.recommend(["i3", "i5"], k=3)


@pytest.mark.parametrize("capacity", [0, -1])
def test_state_cache_of_nothing_or_less(rec, capacity):
    if capacity < 0:
        with pytest.raises(ValueError, match="capacity must be >= 0"):
            Recommender(rec.checkpoint, list(IDS), state_cache=capacity)
        return
    off = Recommender(rec.checkpoint, list(IDS), state_cache=0)
    off.score([[1, 2]])
    off.score([[1, 2]])
    assert len(off.states) == 0 and off.states.hits == 0


def test_knows_is_false_for_histories_without_a_model_item(rec):
    assert rec.knows(["new", "i2"]) and not rec.knows(["new"]) and not rec.knows([])


@pytest.mark.parametrize(
    ("k", "share", "available", "slots"),
    [
        (10, 0.1, 5, 1),
        (5, 0.1, 5, 1),
        (4, 0.1, 5, 0),
        (10, 0.5, 2, 2),
        (10, 0.0, 9, 0),
        (3, 1, 9, 3),
    ],
)
def test_exploration_slots_round_half_up_and_are_capped(k, share, available, slots):
    assert exploration_slots(k, share, available) == slots


RANKED = [(f"m{i}", float(10 - i), MODEL) for i in range(10)]


def test_blend_is_seeded_and_keeps_the_ranked_order():
    seed = request_seed("req-1")
    first = blend(RANKED, ["n1", "n2", "n3"], k=10, share=0.2, seed=seed)
    assert first == blend(RANKED, ["n1", "n2", "n3"], k=10, share=0.2, seed=seed)
    assert len(first) == 10
    explored = [item for item in first if item[2] == EXPLORE]
    assert len(explored) == 2 and all(score is None for _, score, _ in explored)
    assert [item for item in first if item[2] == MODEL] == RANKED[:8]  # order kept, tail dropped
    others = {
        tuple(blend(RANKED, ["n1", "n2", "n3"], 10, 0.2, request_seed(f"r{i}"))) for i in range(20)
    }
    assert len(others) > 1  # different request ids explore differently


def test_blend_without_candidates_or_share_is_the_ranked_list():
    assert blend(RANKED, [], k=5, share=0.5, seed=1) == RANKED[:5]
    assert blend(RANKED, ["n1"], k=5, share=0.0, seed=1) == RANKED[:5]


def test_blend_counts_a_candidate_already_ranked_once_and_fills_short_lists():
    ranked = [("a", 3.0, MODEL), ("new", 2.0, MODEL)]
    out = blend(ranked, ["new"], k=5, share=0.5, seed=3)
    assert sorted(item for item, _, _ in out) == ["a", "new"]
    assert [src for item, _, src in out if item == "new"] == [EXPLORE]
    assert len(blend([], ["x", "y"], k=4, share=0.5, seed=0)) == 2


def test_request_seed_is_stable():
    assert request_seed("abc") == request_seed("abc") != request_seed("abd")
    assert request_seed("abc") == SEED_ABC  # the same in every process (not Python's hash)
