"""Baselines: each recovers a planted pattern, EASE matches its closed form, no seen items."""

import itertools
import math

import numpy as np
import pytest

from recsys.data.splits import leave_last_out
from recsys.evaluation import baselines
from recsys.evaluation.baselines import (
    FITTERS,
    evaluate_baselines,
    fit_ease,
    fit_item_knn,
    fit_markov,
    fit_popularity,
    interaction_matrix,
)
from recsys.evaluation.metrics import evaluate_popularity, evaluate_scores, top_k

N_CHAIN = 10


def successor(item: int) -> int:
    return item % N_CHAIN + 1  # 1 -> 2 -> ... -> 10 -> 1


def chain(start: int, length: int) -> list[int]:
    seq = [start]
    for _ in range(length - 1):
        seq.append(successor(seq[-1]))
    return seq


def block_data() -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Items 1..5 (block A, popular) and 6..10 (block B); users only see one block.

    Returns (train, contexts, targets): B users' two seen items and a third B item to find.
    """
    triples_a = [list(c) for c in itertools.combinations(range(1, 6), 3)]
    triples_b = [list(c) for c in itertools.combinations(range(6, 11), 3)]
    train = triples_a * 3 + triples_b  # A items are three times as popular
    pairs = list(itertools.combinations(range(6, 11), 2))
    contexts = [list(p) for p in pairs]
    targets = [next(i for i in range(6, 11) if i not in p) for p in pairs]
    return train, contexts, targets


def test_interaction_matrix_is_binary_and_ignores_padding():
    x = interaction_matrix([[1, 1, 2], [0, 3]], n_items=3).toarray()
    np.testing.assert_array_equal(x, [[0, 1, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="outside"):
        interaction_matrix([[4]], n_items=3)


def test_markov_predicts_a_deterministic_successor_perfectly():
    train = [chain(start, 6) for start in range(1, N_CHAIN + 1)] + [[7]] * 3  # 7 is popular
    contexts = [chain(start, 3) for start in range(1, N_CHAIN + 1)]
    targets = [successor(c[-1]) for c in contexts]
    scores = fit_markov(train, N_CHAIN).score(contexts)
    assert evaluate_scores(scores, contexts, targets, k=1)["hr_at_1"] == 1.0
    pop = fit_popularity(train, N_CHAIN).score(contexts)
    assert evaluate_scores(pop, contexts, targets, k=1)["hr_at_1"] < 0.5


def test_markov_breaks_ties_by_popularity_and_falls_back_to_it():
    # 1 -> 2 and 1 -> 3 once each; 3 is more popular overall, 4 the most popular.
    train = [[1, 2], [1, 3], [3, 4], [4, 4], [4, 3]]
    model = fit_markov(train, n_items=4)
    row = model.score([[1]])[0]
    assert row[3] > row[2] > row[4]  # transitions first (1 each), popularity only breaks the tie
    assert row[4] < 1.0  # the prior never outweighs one transition
    empty, unknown = model.score([[], [2]])  # no context / no outgoing transition: popularity
    assert np.argmax(empty[1:]) + 1 == 4
    np.testing.assert_array_equal(empty, unknown)


def test_markov_rejects_a_prior_that_could_outweigh_counts():
    with pytest.raises(ValueError, match="prior_weight"):
        fit_markov([[1, 2]], n_items=2, prior_weight=1.0)


@pytest.mark.parametrize("fit", [fit_item_knn, fit_ease])
def test_item_item_recovers_co_occurrence_blocks_better_than_popularity(fit):
    train, contexts, targets = block_data()
    scores = fit(train, 10).score(contexts)
    assert evaluate_scores(scores, contexts, targets, k=3)["hr_at_3"] == 1.0
    pop = fit_popularity(train, 10).score(contexts)
    assert evaluate_scores(pop, contexts, targets, k=3)["hr_at_3"] == 0.0


def test_item_knn_is_hand_computed_cosine():
    # item 1: users {0, 1}; item 2: users {1, 2}; item 3: user {2}
    sim = fit_item_knn([[1], [1, 2], [2, 3]], n_items=3).weights
    assert sim[1, 2] == pytest.approx(1 / 2)  # |{1}| / sqrt(2 * 2)
    assert sim[2, 3] == pytest.approx(1 / math.sqrt(2))  # |{2}| / sqrt(2 * 1)
    assert sim[1, 3] == 0.0
    np.testing.assert_array_equal(np.diag(sim), 0.0)
    score = fit_item_knn([[1], [1, 2], [2, 3]], n_items=3).score([[1, 3]])[0]
    assert score[2] == pytest.approx(1 / 2 + 1 / math.sqrt(2))  # sum over the context items


def test_item_knn_neighbourhood_keeps_the_top_entries_per_column():
    train, _, _ = block_data()
    full = fit_item_knn(train, 10).weights
    pruned = fit_item_knn(train, 10, neighbours=2).weights
    for col in range(1, 11):  # each column keeps its two largest similarities, unchanged
        kept = np.sort(pruned[:, col][pruned[:, col] > 0])
        np.testing.assert_array_equal(kept, np.sort(full[:, col])[-2:])


def test_ease_matches_per_item_ridge_regression():
    rng = np.random.default_rng(0)
    x = (rng.random((12, 5)) < 0.4).astype(np.float64)  # users x items 1..5
    train = [list(np.flatnonzero(row) + 1) for row in x]
    lam = 2.0
    weights = fit_ease(train, n_items=5, lam=lam).weights[1:, 1:]
    for j in range(5):  # column j: ridge regression of item j on every other item
        others = [i for i in range(5) if i != j]
        a = x[:, others]
        b = np.linalg.solve(a.T @ a + lam * np.eye(4), a.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], b, rtol=1e-4, atol=1e-6)
        assert weights[j, j] == 0.0
    scores = fit_ease(train, n_items=5, lam=lam).score([train[0]])[0, 1:]
    np.testing.assert_allclose(scores, x[0] @ weights, rtol=1e-4, atol=1e-6)


def test_popularity_baseline_matches_evaluate_popularity():
    seqs = [[1, 2, 3, 4], [2, 3, 1], [3, 4, 2, 1], [4, 4, 2]]
    split = leave_last_out(seqs)
    scores = fit_popularity(split.train, 4).score(split.test_context)
    got = evaluate_scores(scores, split.test_context, split.test_target)
    assert got == evaluate_popularity(split, 4)


@pytest.mark.parametrize("name", sorted(FITTERS))
def test_no_baseline_recommends_seen_items(name):
    # Users re-consume the popular items 1 and 2, so unmasked, seen items would often win.
    rng = np.random.default_rng(1)
    seqs = [[1, 2, 1, *rng.integers(1, 9, size=4).tolist(), 2, 1] for _ in range(30)]
    model = FITTERS[name](seqs, 8)
    contexts = [s[:-1] for s in seqs]
    scores = model.score(contexts)
    best_unmasked = np.argmax(scores[:, 1:], axis=1) + 1
    assert any(b in c for b, c in zip(best_unmasked, contexts, strict=True))  # a real threat
    lists = top_k(scores, contexts, k=3)
    for row, ctx in zip(lists, contexts, strict=True):
        assert not set(row.tolist()) & set(ctx)
    best = lists[:, 0].tolist()  # the best unseen item ranks first once seen items are filtered
    assert evaluate_scores(scores, contexts, best, k=1)["hr_at_1"] == 1.0


@pytest.mark.parametrize("name", sorted(FITTERS))
def test_scores_are_float32_full_rows_and_batching_is_invisible(name, monkeypatch):
    train, contexts, _ = block_data()
    model = FITTERS[name](train, 10)
    whole = model.score(contexts)
    monkeypatch.setattr(baselines, "SCORE_BLOCK", 3)
    assert whole.shape == (len(contexts), 11) and whole.dtype == np.float32
    np.testing.assert_array_equal(model.score(contexts), whole)


def test_evaluate_baselines_reports_every_baseline_on_the_chosen_part():
    seqs = [chain(start, 8) for start in range(1, N_CHAIN + 1)] + [[7, 7]] * 2  # 7 is popular
    split = leave_last_out(seqs)
    results = evaluate_baselines(split, N_CHAIN, k=1, on="valid", params={"ease": {"lam": 1.0}})
    assert set(results) == set(FITTERS)
    assert results["markov"]["hr_at_1"] == 1.0  # valid target follows the last context item
    assert results["markov"]["hr_at_1"] > results["popularity"]["hr_at_1"]
    assert {"ndcg_at_1", "mrr", "coverage_at_1", "novelty_at_1", "arp_at_1"} <= set(results["ease"])
    assert results["markov"]["n_users"] == N_CHAIN
