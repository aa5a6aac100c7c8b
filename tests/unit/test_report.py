"""The run report's pure parts: tables by hand on tiny inputs, and the shape of each figure."""

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from recsys.evaluation import report

# Items 1..4, training counts 5, 3, 2, 0 (total 10); column 0 is padding.
COUNTS = np.array([0.0, 5.0, 3.0, 2.0, 0.0])


def _bars(fig: Figure) -> int:
    return sum(len(container) for ax in fig.axes for container in ax.containers)


# -- learning curve ------------------------------------------------------------------------------
def test_learning_curve_has_one_axis_per_metric_and_skips_rows_without_the_metric():
    history = [
        {"epoch": 1, "loss": 3.0},
        {"epoch": 2, "loss": 2.0, "ndcg_at_10": 0.1},
        {"epoch": 3, "ndcg_at_10": 0.2},
    ]
    fig = report.learning_curve(history, ("loss", "ndcg_at_10"))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    (loss,) = fig.axes[0].get_lines()
    (ndcg,) = fig.axes[1].get_lines()
    assert list(loss.get_xdata()) == [1.0, 2.0] and list(loss.get_ydata()) == [3.0, 2.0]
    assert list(ndcg.get_xdata()) == [2.0, 3.0] and list(ndcg.get_ydata()) == [0.1, 0.2]
    assert [ax.get_title() for ax in fig.axes] == ["loss", "ndcg_at_10"]


def test_learning_curve_sorts_by_epoch_and_says_when_a_metric_has_no_points():
    fig = report.learning_curve([{"epoch": 1, "loss": 1.0}], ["mrr"])
    assert len(fig.axes) == 1 and not fig.axes[0].get_lines()
    assert [t.get_text() for t in fig.axes[0].texts] == ["no data"]
    history = [{"epoch": 2, "loss": 1.0}, {"epoch": 1, "loss": 2.0}]
    (line,) = report.learning_curve(history, ["loss"]).axes[0].get_lines()
    assert list(line.get_xdata()) == [1.0, 2.0] and list(line.get_ydata()) == [2.0, 1.0]


def test_learning_curve_needs_a_metric():
    with pytest.raises(ValueError, match="at least one"):
        report.learning_curve([{"epoch": 1, "loss": 1.0}], [])


# -- accuracy by history length ------------------------------------------------------------------
def test_metric_by_history_length_hand_computed_with_empty_bins():
    # ranks are 0-based: 0 and 3 are hits at k=5, 7 is not
    table = report.metric_by_history_length(
        ranks=[0, 3, 7, 1], lengths=[2, 6, 7, 300], k=5, bins=(1, 5, 10, 20, math.inf)
    )
    assert [row["history_length"] for row in table] == ["1-4", "5-9", "10-19", "20+"]
    assert [row["n_users"] for row in table] == [1, 2, 0, 1]
    assert table[0]["hr_at_5"] == 1.0 and table[0]["ndcg_at_5"] == 1.0
    assert table[1]["hr_at_5"] == 0.5
    assert table[1]["ndcg_at_5"] == pytest.approx((1 / math.log2(5)) / 2)
    assert math.isnan(table[2]["hr_at_5"]) and math.isnan(table[2]["ndcg_at_5"])
    assert table[3]["ndcg_at_5"] == pytest.approx(1 / math.log2(3))


def test_metric_by_history_length_counts_no_user_outside_the_bins_and_labels_single_values():
    table = report.metric_by_history_length([0, 0, 0], [0, 1, 3], k=1, bins=(1, 2, 3))
    assert [row["history_length"] for row in table] == ["1", "2"]
    assert [row["n_users"] for row in table] == [1, 0]


@pytest.mark.parametrize(
    ("ranks", "lengths", "bins", "match"),
    [
        ([0, 1], [1], (1, 2), "ranks"),
        ([0], [1], (1,), "bins"),
        ([0], [1], (5, 1), "bins"),
        ([0], [1], (1, 1, 2), "bins"),
    ],
)
def test_metric_by_history_length_checks_its_inputs(ranks, lengths, bins, match):
    with pytest.raises(ValueError, match=match):
        report.metric_by_history_length(ranks, lengths, bins=bins)


def test_metric_by_history_length_figure_draws_one_bar_per_bin_and_metric():
    table = report.metric_by_history_length([0, 3, 12], [2, 6, 7], k=10)  # 7 default bins
    fig = report.metric_by_history_length_figure(table)
    assert len(fig.axes) == 1 and _bars(fig) == 2 * len(table) == 14
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "1-4\n(n=1)" and labels[1] == "5-9\n(n=2)"


# -- popularity of recommendations ---------------------------------------------------------------
def test_recommendation_popularity_hand_computed():
    # bins of two items: {1, 2} (8 of 10 interactions) and {3, 4}; slot 0 is empty
    table = report.recommendation_popularity(np.array([[1, 2], [3, 0]]), COUNTS, n_bins=2)
    assert table == [
        {"bin": 1, "n_items": 2, "interaction_share": 0.8, "recommendation_share": 2 / 3},
        {"bin": 2, "n_items": 2, "interaction_share": 0.2, "recommendation_share": 1 / 3},
    ]


def test_recommendation_popularity_orders_by_count_not_by_index():
    counts = np.array([0.0, 1.0, 0.0, 9.0])  # item 3 is the most popular, item 2 the least
    table = report.recommendation_popularity(np.array([[3], [3], [2], [1]]), counts, n_bins=3)
    assert [row["recommendation_share"] for row in table] == [0.5, 0.25, 0.25]
    assert [row["interaction_share"] for row in table] == [0.9, 0.1, 0.0]


def test_recommendation_popularity_shares_sum_to_one_and_bins_cover_the_catalogue():
    rng = np.random.default_rng(0)
    counts = np.concatenate([[0.0], rng.integers(0, 50, size=23).astype(float)])
    topk = rng.integers(0, 24, size=(30, 5))
    table = report.recommendation_popularity(topk, counts, n_bins=10)
    assert len(table) == 10 and sum(row["n_items"] for row in table) == 23
    assert sum(row["recommendation_share"] for row in table) == pytest.approx(1.0)
    assert sum(row["interaction_share"] for row in table) == pytest.approx(1.0)


def test_recommendation_popularity_has_at_most_one_bin_per_item():
    table = report.recommendation_popularity(np.array([[1]]), COUNTS, n_bins=10)
    assert [row["n_items"] for row in table] == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("topk", "counts", "n_bins", "match"),
    [
        (np.array([[0, 0]]), COUNTS, 2, "empty"),
        (np.array([[5]]), COUNTS, 2, "outside"),
        (np.array([[1]]), np.zeros(5), 2, "positive total"),
        (np.array([[1]]), COUNTS, 0, "n_bins"),
    ],
)
def test_recommendation_popularity_checks_its_inputs(topk, counts, n_bins, match):
    with pytest.raises(ValueError, match=match):
        report.recommendation_popularity(topk, counts, n_bins=n_bins)


def test_recommendation_popularity_figure_pairs_two_bars_per_bin():
    table = report.recommendation_popularity(np.array([[1, 2], [3, 0]]), COUNTS, n_bins=4)
    fig = report.recommendation_popularity_figure(table)
    assert len(fig.axes) == 1 and _bars(fig) == 2 * 4
    heights = [bar.get_height() for bar in fig.axes[0].containers[1]]
    assert heights == [row["recommendation_share"] for row in table]


# -- a run's report ------------------------------------------------------------------------------
def test_evaluation_plots_names_each_plot_with_the_rows_it_draws():
    plots = report.evaluation_plots(
        history=[{"epoch": 1, "loss": 2.0}],
        curves=["loss"],
        ranks=[0, 20],
        lengths=[3, 60],
        topk=np.array([[1, 2], [3, 4]]),
        item_counts=COUNTS,
        k=10,
    )
    assert list(plots) == ["learning_curve", "ndcg_by_history_length", "recommendation_popularity"]
    assert all(isinstance(fig, Figure) for fig, _ in plots.values())
    assert plots["learning_curve"][1] == [{"epoch": 1, "loss": 2.0}]
    assert [r["n_users"] for r in plots["ndcg_by_history_length"][1]] == [1, 0, 0, 0, 1, 0, 0]
    assert len(plots["recommendation_popularity"][1]) == 4


# -- model comparison ----------------------------------------------------------------------------
def test_comparison_table_bolds_the_best_of_each_column():
    rows = {"model": {"ndcg": 0.5, "arp": 0.2}, "pop": {"ndcg": 0.25, "arp": 0.1}}
    lines = report.comparison_table(rows, ["ndcg", "arp"], lower_is_better=["arp"]).splitlines()
    assert lines == [
        "| model | ndcg | arp |",
        "|---|---:|---:|",
        "| model | **0.5000** | 0.2000 |",
        "| pop | 0.2500 | **0.1000** |",
    ]


def test_comparison_table_bolds_ties_and_shows_missing_values_as_dashes():
    rows = {"a": {"x": 0.12341}, "b": {"x": 0.12339, "y": math.nan}, "c": {"x": 0.1}}
    lines = report.comparison_table(rows, ["x", "y"]).splitlines()
    assert lines[2:] == ["| a | **0.1234** | - |", "| b | **0.1234** | - |", "| c | 0.1000 | - |"]


def test_unaffordable_baselines_are_the_dense_ones_above_their_limit():
    limits = {"ease": 100, "item_knn": 1000}
    names = ["popularity", "item_knn", "ease", "markov"]
    assert report.unaffordable_baselines(names, 100, limits) == {}
    assert list(report.unaffordable_baselines(names, 101, limits)) == ["ease"]
    assert list(report.unaffordable_baselines(names, 5000, limits)) == ["item_knn", "ease"]
    assert "5000 > 100" in report.unaffordable_baselines(names, 5000, limits)["ease"]


def test_as_columns_keeps_key_order_and_fills_missing_values_with_none():
    assert report.as_columns([{"a": 1, "b": 2}, {"a": 3, "c": 4}]) == {
        "a": [1, 3],
        "b": [2, None],
        "c": [None, 4],
    }
    assert report.as_columns([]) == {}
