"""Splits, ranking and metrics: limits, hand-computed values and the seen-item filter."""

import math

import numpy as np
import pytest

from recsys.evaluate import (
    Split,
    evaluate_popularity,
    evaluate_scores,
    hit_rate_at_k,
    leave_last_out,
    mrr,
    ndcg_at_k,
    popularity_scores,
    rank_targets,
)


@pytest.mark.parametrize(
    "metric", [lambda r: hit_rate_at_k(r, 10), lambda r: ndcg_at_k(r, 10), mrr]
)
def test_perfect_ranking_scores_one(metric):
    assert metric([0, 0, 0]) == 1.0


@pytest.mark.parametrize("metric", [hit_rate_at_k, ndcg_at_k])
def test_no_hits_scores_zero(metric):
    assert metric([10, 11, 500], 10) == 0.0


@pytest.mark.parametrize("metric", [lambda r: hit_rate_at_k(r, 5), lambda r: ndcg_at_k(r, 5), mrr])
def test_empty_ranks_raise(metric):
    with pytest.raises(ValueError, match="empty"):
        metric([])


def test_hand_computed_values():
    assert ndcg_at_k([2], 10) == pytest.approx(0.5)  # 1 / log2(2 + 2)
    assert ndcg_at_k([0, 2], 10) == pytest.approx(0.75)
    assert ndcg_at_k([1], 10) == pytest.approx(1 / math.log2(3))
    assert hit_rate_at_k([0, 4, 5, 9], 5) == pytest.approx(0.5)  # rank < k is a hit
    assert mrr([0, 1, 3]) == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)


def test_rank_targets_excludes_seen_and_padding_but_never_the_target():
    # columns: 0 = padding, items 1..5
    scores = np.array(
        [
            [9.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # target 3, items 1 and 3 seen: only item 2 is above
            [9.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # target 5, nothing seen: four items above
            [9.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # target 1 was seen before: still ranked, first
        ]
    )
    before = scores.copy()
    ranks = rank_targets(scores, targets=[3, 5, 1], contexts=[[1, 3], [], [1, 2]])
    assert ranks.tolist() == [1, 4, 0]
    np.testing.assert_array_equal(scores, before)  # the input is not modified


def test_rank_targets_counts_strictly_higher_scores_only():
    scores = np.array([[0.0, 1.0, 1.0, 1.0, 0.5]])
    assert rank_targets(scores, [2], [[]]).tolist() == [0]  # ties are in the target's favour


def test_rank_targets_unknown_target_ranks_last():
    scores = np.array([[-np.inf, 1.0, 2.0, -np.inf]])
    assert rank_targets(scores, [3], [[]]).tolist() == [2]


def test_rank_targets_rejects_padding_target():
    with pytest.raises(ValueError):
        rank_targets(np.zeros((1, 4)), [0], [[]])


def test_leave_last_out_hand_example():
    split = leave_last_out([[1, 2, 3, 4], [5, 6], [7, 8, 9], [1]], min_events=3)
    assert split == Split(
        train=[[1, 2], [5, 6], [7]],
        valid_context=[[1, 2], [7]],
        valid_target=[3, 8],
        test_context=[[1, 2, 3], [7, 8]],
        test_target=[4, 9],
        test_users=[0, 2],
    )


def test_leave_last_out_min_events():
    split = leave_last_out([[1, 2, 3], [4, 5, 6, 7]], min_events=4)
    assert split.test_users == [1]
    assert split.train == [[1, 2, 3], [4, 5]]


def test_popularity_scores_counts_items_and_ignores_padding():
    pop = popularity_scores([[1, 2, 2], [2, 4], [0, 0]], n_items=5)
    assert pop.tolist() == [0, 1, 3, 0, 1, 0]


def test_popularity_scores_rejects_unknown_items():
    with pytest.raises(ValueError):
        popularity_scores([[1, 7]], n_items=5)


def test_evaluate_popularity_hand_example():
    # item 2 is the most popular, then 1; user 0's test target 2 is first, user 1's target 1 is
    # second behind 2 (1 is not seen by user 1).
    split = Split(
        train=[[1, 2, 2], [2, 3]],
        valid_context=[[1], [3]],
        valid_target=[2, 2],
        test_context=[[1, 3], [3, 4]],
        test_target=[2, 1],
        test_users=[0, 1],
    )
    got = evaluate_popularity(split, n_items=4, k=1)
    assert got == {"hr_at_1": 0.5, "ndcg_at_1": 0.5, "mrr": pytest.approx(0.75), "n_users": 2}


def test_evaluate_scores_keys_follow_k():
    scores = np.array([[0.0, 3.0, 2.0, 1.0]])
    got = evaluate_scores(scores, [[]], [2], k=5)
    assert set(got) == {"hr_at_5", "ndcg_at_5", "mrr", "n_users"}
    assert got["ndcg_at_5"] == pytest.approx(1 / math.log2(3))


def test_rank_targets_in_blocks_matches_one_block(monkeypatch):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 12))
    targets = rng.integers(1, 12, size=7).tolist()
    contexts = [rng.integers(1, 12, size=n).tolist() for n in range(7)]
    whole = rank_targets(scores, targets, contexts)
    monkeypatch.setattr("recsys.evaluate.RANK_BLOCK", 3)
    np.testing.assert_array_equal(rank_targets(scores, targets, contexts), whole)
