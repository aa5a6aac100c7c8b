"""Beyond-accuracy metrics on top-k lists: limits, hand-computed values and the seen-item filter."""

import math

import numpy as np
import pytest

from recsys.evaluation.metrics import (
    catalogue_coverage,
    evaluate_beyond_accuracy,
    novelty,
    popularity_bias,
    top_k,
)

COUNTS = np.array([0.0, 6.0, 3.0, 1.0, 0.0])  # items 1..4, total 10; item 4 never seen in training


def test_top_k_orders_best_first_and_skips_padding_and_seen_items():
    scores = np.array([[9.0, 1.0, 5.0, 3.0, 4.0], [9.0, 4.0, 3.0, 2.0, 1.0]])
    lists = top_k(scores, [[2], []], k=2)
    np.testing.assert_array_equal(lists, [[4, 3], [1, 2]])


def test_top_k_breaks_ties_by_lower_index_and_leaves_unfillable_slots_empty():
    scores = np.array([[0.0, 1.0, 1.0, 1.0], [0.0, -np.inf, 2.0, 1.0]])
    lists = top_k(scores, [[1], [3]], k=3)
    # row 0: items 2 and 3 tie; row 1: item 1 is unknown (-inf) and 3 is seen, only 2 is left
    np.testing.assert_array_equal(lists, [[2, 3, 0], [2, 0, 0]])


def test_top_k_does_not_mutate_scores_and_checks_its_inputs():
    scores = np.array([[0.0, 1.0, 2.0]])
    top_k(scores, [[2]], k=1)
    np.testing.assert_array_equal(scores, [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="k must be"):
        top_k(scores, [[]], k=0)
    with pytest.raises(ValueError, match="contexts"):
        top_k(scores, [[], []], k=1)


def test_coverage_is_one_when_the_lists_cover_the_catalogue():
    assert catalogue_coverage(np.array([[1, 2], [3, 4]]), n_items=4) == 1.0


def test_coverage_is_one_over_n_when_every_list_is_the_same_single_item():
    assert catalogue_coverage(np.array([[3], [3], [3]]), n_items=4) == pytest.approx(1 / 4)


def test_coverage_hand_computed_and_ignores_empty_slots():
    assert catalogue_coverage(np.array([[1, 2, 0], [2, 0, 0]]), n_items=5) == pytest.approx(2 / 5)


def test_novelty_of_always_the_most_popular_item_is_its_self_information():
    assert novelty(np.array([[1], [1]]), COUNTS) == pytest.approx(-math.log2(0.6))


def test_novelty_hand_computed_with_unseen_items_counted_once():
    # item 2: -log2(0.3); item 4 is unseen: smoothed to count 1, -log2(0.1) = log2(total)
    expected = (-math.log2(0.3) - math.log2(0.1)) / 2
    assert novelty(np.array([[2, 4]]), COUNTS) == pytest.approx(expected)
    assert math.isfinite(novelty(np.array([[4]]), COUNTS))


def test_popularity_bias_is_the_mean_training_share():
    assert popularity_bias(np.array([[1], [1]]), COUNTS) == pytest.approx(0.6)
    assert popularity_bias(np.array([[1, 3], [2, 4]]), COUNTS) == pytest.approx(
        (0.6 + 0.1 + 0.3 + 0.0) / 4
    )


@pytest.mark.parametrize(
    "metric",
    [
        lambda t: catalogue_coverage(t, 4),
        lambda t: novelty(t, COUNTS),
        lambda t: popularity_bias(t, COUNTS),
    ],
)
def test_metrics_reject_empty_lists_and_unknown_items(metric):
    with pytest.raises(ValueError, match="empty"):
        metric(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="outside"):
        metric(np.array([[5]]))


def test_novelty_rejects_counts_without_a_total():
    with pytest.raises(ValueError, match="positive total"):
        novelty(np.array([[1]]), np.zeros(3))


def test_evaluate_beyond_accuracy_uses_the_filtered_top_k():
    # Unfiltered, everybody would get item 1; it is seen, so both get item 2 then 3.
    scores = np.array([[0.0, 9.0, 5.0, 4.0, 1.0]] * 2)
    got = evaluate_beyond_accuracy(scores, [[1], [1]], COUNTS, k=2)
    assert got == pytest.approx(
        {
            "coverage_at_2": 2 / 4,
            "novelty_at_2": (-math.log2(0.3) - math.log2(0.1)) / 2,
            "arp_at_2": (0.3 + 0.1) / 2,
        }
    )
