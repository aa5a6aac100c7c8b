"""Splits, ranking and metrics: limits, hand-computed values and the seen-item filter."""

import math

import numpy as np
import pytest

from recsys.data.splits import Split, leave_last_out, next_interval_split
from recsys.evaluation.metrics import (
    evaluate_popularity,
    evaluate_scores,
    hit_rate_at_k,
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
    monkeypatch.setattr("recsys.evaluation.metrics.RANK_BLOCK", 3)
    np.testing.assert_array_equal(rank_targets(scores, targets, contexts), whole)


# -- next_interval_split ------------------------------------------------------------------------
HISTORIES = [
    [(1, 0.0), (2, 5.0), (3, 10.0), (4, 15.0), (5, 20.0)],  # user 0: before, in, at end
    [(6, 10.0), (7, 12.0)],  # user 1: cold, only window events
    [(8, 1.0), (9, 2.0)],  # user 2: nothing in the window
    [],  # user 3: no events at all
]


def test_next_interval_split_hand_example():
    out = next_interval_split(HISTORIES, start=10.0, end=20.0)
    assert out.train == [[1, 2], [], [8, 9], []]
    assert out.contexts == [[1, 2], [1, 2, 3], [], [6]]
    assert out.targets == [3, 4, 6, 7]
    assert out.users == [0, 0, 1, 1]
    assert out.n_repeats == 0


def test_next_interval_split_event_at_start_is_a_case_and_at_end_is_ignored():
    out = next_interval_split([[(1, 0.0), (2, 10.0), (3, 20.0)]], start=10.0, end=20.0)
    assert out.train == [[1]]
    assert out.targets == [2]  # t == start is inside [start, end), t == end is not


def test_next_interval_split_empty_window():
    out = next_interval_split(HISTORIES, start=10.0, end=10.0)
    assert out.contexts == [] and out.targets == [] and out.users == []
    assert out.train == [[1, 2], [], [8, 9], []]


def test_next_interval_split_window_after_all_events_keeps_everything_for_training():
    out = next_interval_split(HISTORIES, start=100.0, end=200.0)
    assert out.train == [[1, 2, 3, 4, 5], [6, 7], [8, 9], []]
    assert out.targets == []


def test_next_interval_split_window_before_all_events_is_all_cold():
    out = next_interval_split([[(1, 5.0), (2, 6.0)]], start=0.0, end=10.0)
    assert out.train == [[]]
    assert out.contexts == [[], [1]]
    assert out.targets == [1, 2]


def test_next_interval_split_ties_keep_input_order():
    history = [[(3, 0.0), (1, 7.0), (2, 7.0), (9, 7.0)]]
    out = next_interval_split(history, start=7.0, end=8.0)
    assert out.targets == [1, 2, 9]
    assert out.contexts == [[3], [3, 1], [3, 1, 2]]
    # A tie at the start sits wholly inside the window, never split between train and cases.
    assert out.train == [[3]]


def test_next_interval_split_preserves_user_and_time_order():
    histories = [[(5, 3.0), (4, 4.0)], [(2, 1.0), (1, 3.5)]]
    out = next_interval_split(histories, start=3.0, end=5.0)
    assert out.users == [0, 0, 1]
    assert out.targets == [5, 4, 1]
    assert out.contexts == [[], [5], [2]]


@pytest.mark.parametrize(("repeats", "targets", "contexts"), [
    ("drop", [2], [[1, 1]]),
    ("keep", [1, 2], [[1], [1, 1]]),
])  # fmt: skip
def test_next_interval_split_repeats(repeats, targets, contexts):
    out = next_interval_split([[(1, 0.0), (1, 5.0), (2, 6.0)]], 5.0, 10.0, repeats=repeats)
    assert out.targets == targets
    assert out.contexts == contexts  # the repeated event stays in later contexts either way
    assert out.n_repeats == 1


def test_next_interval_split_counts_repeats_inside_the_window():
    out = next_interval_split([[(1, 5.0), (1, 6.0)]], 0.0, 10.0)
    assert out.targets == [1] and out.n_repeats == 1


def test_next_interval_split_accepts_integer_timestamps_and_generators_of_pairs():
    out = next_interval_split([((1, 100), (2, 200))], start=150, end=250)
    assert out.train == [[1]] and out.targets == [2]


@pytest.mark.parametrize(("histories", "start", "end", "match"), [
    ([[(1, 0.0)]], 5.0, 4.0, "before its start"),
    ([[(1, 2.0), (2, 1.0)]], 0.0, 5.0, "not ordered by time"),
    ([[(0, 1.0)]], 0.0, 5.0, "below 1"),
])  # fmt: skip
def test_next_interval_split_rejects_bad_input(histories, start, end, match):
    with pytest.raises(ValueError, match=match):
        next_interval_split(histories, start, end)


def test_next_interval_split_rejects_unknown_repeats_policy():
    with pytest.raises(ValueError, match="repeats"):
        next_interval_split([[(1, 0.0)]], 0.0, 1.0, repeats="ignore")  # type: ignore[arg-type]


def test_next_interval_split_cases_feed_evaluate_scores():
    out = next_interval_split([[(1, 0.0), (2, 5.0), (3, 6.0)]], 5.0, 10.0)
    scores = np.array([[0.0, 9.0, 1.0, 0.5], [0.0, 9.0, 8.0, 0.5]])  # (2 cases, 3 items + 1)
    metrics = evaluate_scores(scores, out.contexts, out.targets, k=1)
    # case 0: item 1 is seen, so target 2 ranks first; case 1: items 1, 2 seen, target 3 first
    assert metrics["hr_at_1"] == 1.0
