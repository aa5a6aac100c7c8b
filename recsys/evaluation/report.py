"""What a reviewer reads on a run's page: comparison tables and plots, built from in-memory results.

Everything here is pure: tables are lists of dicts (or markdown text) and plots are
``matplotlib.figure.Figure`` objects built without ``pyplot``, so no global figure state and no
GUI backend are involved (``Figure.savefig`` renders with Agg). Logging them is the registry's job.

Conventions are those of ``recsys.evaluation.metrics``: items are ``1..n_items`` (0 is padding,
and a top-k slot holding 0 is empty) and ranks are 0-based (``rank < k`` is a hit).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.evaluation.metrics import hit_rate_at_k, ndcg_at_k

if TYPE_CHECKING:  # matplotlib is imported inside the functions that draw
    from matplotlib.figure import Figure

HISTORY_BINS: tuple[float, ...] = (1, 5, 10, 20, 50, 100, 200, math.inf)
# Largest catalogue each dense item-item baseline is fitted on: item-kNN holds a few
# (n_items + 1)^2 float32 matrices (1.6 GB each at 20k items); EASE also inverts one in float64,
# O(n_items^3) time: 10 s at 4k items on two busy cores, so about 20 s at 5k and 2.5 min at 10k.
# Other baselines have no limit.
DENSE_BASELINE_LIMITS: dict[str, int] = {"item_knn": 20_000, "ease": 5_000}


# -- learning curve ------------------------------------------------------------------------------
def learning_curve(
    history: Sequence[Mapping[str, float]], metrics: Sequence[str] = ("loss", "ndcg_at_10")
) -> Figure:
    """One axis per metric, its value against ``epoch`` (``TrainResult.history`` rows).

    Rows without the metric (or without an epoch) are skipped; a metric with no points at all gets
    an empty axis that says so.
    """
    from matplotlib.figure import Figure

    if not metrics:
        raise ValueError("metrics must name at least one metric")
    fig = Figure(figsize=(4.5 * len(metrics), 3.5), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, name in zip(axes, metrics, strict=True):
        points = sorted(
            (float(row["epoch"]), float(row[name]))
            for row in history
            if "epoch" in row and name in row
        )
        if points:
            epochs, values = zip(*points, strict=True)
            ax.plot(epochs, values, marker="o")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    return fig


# -- accuracy by user-history length -------------------------------------------------------------
def _bin_label(lo: float, hi: float) -> str:
    if math.isinf(hi):
        return f"{lo:g}+"
    return f"{lo:g}-{hi - 1:g}" if hi - lo > 1 else f"{lo:g}"


def metric_by_history_length(
    ranks: Sequence[int] | np.ndarray,
    lengths: Sequence[int] | np.ndarray,
    k: int = 10,
    bins: Sequence[float] = HISTORY_BINS,
) -> list[dict[str, Any]]:
    """HR@k and NDCG@k of the users whose history length falls in each bin ``[bins[i], bins[i+1])``.

    ``ranks`` are 0-based target ranks (``recsys.evaluation.metrics.rank_targets``) and
    ``lengths`` the lengths of the contexts they were ranked from. One row per bin, in order:
    ``{"history_length", "min_length", "n_users", "hr_at_{k}", "ndcg_at_{k}"}``; an empty bin has
    ``n_users == 0`` and NaN metrics. Users shorter than ``bins[0]`` (or not below ``bins[-1]``)
    are not counted.
    """
    r = np.asarray(ranks, dtype=np.int64).reshape(-1)
    n = np.asarray(lengths, dtype=np.float64).reshape(-1)
    if r.shape != n.shape:
        raise ValueError(f"got {r.size} ranks but {n.size} lengths")
    edges = [float(b) for b in bins]
    if len(edges) < 2 or any(b >= a for a, b in zip(edges[1:], edges[:-1], strict=True)):
        raise ValueError(f"bins must be at least two strictly increasing edges, got {bins}")
    table = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = r[(n >= lo) & (n < hi)]
        table.append(
            {
                "history_length": _bin_label(lo, hi),
                "min_length": lo,
                "n_users": int(inside.size),
                f"hr_at_{k}": hit_rate_at_k(inside, k) if inside.size else math.nan,
                f"ndcg_at_{k}": ndcg_at_k(inside, k) if inside.size else math.nan,
            }
        )
    return table


def metric_by_history_length_figure(table: Sequence[Mapping[str, Any]]) -> Figure:
    """Grouped bars (one group per history-length bin) of the ``hr_at_*``/``ndcg_at_*`` columns of
    a ``metric_by_history_length`` table, with each bin's user count under its label."""
    from matplotlib.figure import Figure

    metrics = [key for key in (table[0] if table else {}) if key.startswith(("hr_at_", "ndcg_at_"))]
    labels = [f"{row['history_length']}\n(n={row['n_users']})" for row in table]
    fig = Figure(figsize=(max(5.0, 1.0 * len(table) + 2), 3.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table))
    width = 0.8 / max(len(metrics), 1)
    for i, name in enumerate(metrics):
        values = [float(row[name]) for row in table]
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels)
    ax.set_xlabel("history length (items before the test target)")
    ax.set_ylabel("test metric")
    ax.set_title("Accuracy by user-history length")
    if metrics:
        ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return fig


# -- popularity of what is recommended -----------------------------------------------------------
def recommendation_popularity(
    topk: np.ndarray, item_counts: np.ndarray, n_bins: int = 10
) -> list[dict[str, Any]]:
    """Share of recommended slots in each popularity bin of the catalogue vs. its interaction share.

    The ``n_items`` items of ``item_counts`` (``(n_items + 1,)`` training counts, as
    ``popularity_scores``; column 0 is padding) are ordered most popular first (ties go to the
    lower index) and cut into ``n_bins`` groups of (nearly) equal size: bin 1 holds the most
    popular items. Empty slots (0) of ``topk`` ``(N, k)`` are ignored. One row per bin:
    ``{"bin", "n_items", "interaction_share", "recommendation_share"}``. With fewer items than
    ``n_bins`` there are only ``n_items`` bins.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    counts = np.asarray(item_counts, dtype=np.float64).reshape(-1)[1:]  # (n_items,)
    if counts.size == 0 or np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError("item_counts must be non-negative with a positive total over 1..n_items")
    items = np.asarray(topk, dtype=np.int64).reshape(-1)
    items = items[items != 0]
    if items.size == 0:
        raise ValueError("top-k lists are empty: nothing was recommended")
    if items.min() < 1 or items.max() > counts.size:
        raise ValueError(f"top-k lists contain item indices outside 1..{counts.size}")
    order = np.argsort(-counts, kind="stable")  # 0-based positions, most popular first
    bin_of = np.empty(counts.size, dtype=np.int64)  # bin_of[item - 1]
    groups = np.array_split(order, min(n_bins, counts.size))
    for b, group in enumerate(groups):
        bin_of[group] = b
    recommended = np.bincount(bin_of[items - 1], minlength=len(groups)) / items.size
    return [
        {
            "bin": b + 1,
            "n_items": int(group.size),
            "interaction_share": float(counts[group].sum() / counts.sum()),
            "recommendation_share": float(recommended[b]),
        }
        for b, group in enumerate(groups)
    ]


def recommendation_popularity_figure(table: Sequence[Mapping[str, Any]]) -> Figure:
    """Paired bars per popularity bin: share of interactions vs. share of recommendations."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.6 * len(table) + 2), 3.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table))
    width = 0.4
    ax.bar(x - width / 2, [r["interaction_share"] for r in table], width, label="interactions")
    ax.bar(x + width / 2, [r["recommendation_share"] for r in table], width, label="top-k slots")
    ax.set_xticks(x, [str(r["bin"]) for r in table])
    ax.set_xlabel("item popularity bin (1 = most popular)")
    ax.set_ylabel("share")
    ax.set_title("Popularity of recommended items")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return fig


# -- a run's report -------------------------------------------------------------------------------
def evaluation_plots(
    history: Sequence[Mapping[str, float]],
    curves: Sequence[str],
    ranks: Sequence[int] | np.ndarray,
    lengths: Sequence[int] | np.ndarray,
    topk: np.ndarray,
    item_counts: np.ndarray,
    k: int = 10,
) -> dict[str, tuple[Figure, list[dict[str, Any]]]]:
    """The plots of a run's report by name, each with the rows it draws.

    ``learning_curve`` (the ``curves`` of ``history`` against epoch), ``ndcg_by_history_length``
    (from test ``ranks`` and context ``lengths``) and ``recommendation_popularity`` (from the
    ``topk`` lists and training ``item_counts``).
    """
    by_length = metric_by_history_length(ranks, lengths, k=k)
    popularity = recommendation_popularity(topk, item_counts)
    return {
        "learning_curve": (learning_curve(history, curves), [dict(row) for row in history]),
        "ndcg_by_history_length": (metric_by_history_length_figure(by_length), by_length),
        "recommendation_popularity": (recommendation_popularity_figure(popularity), popularity),
    }


# -- model comparison ----------------------------------------------------------------------------
def unaffordable_baselines(
    names: Iterable[str], n_items: int, limits: Mapping[str, int] = DENSE_BASELINE_LIMITS
) -> dict[str, str]:
    """The baselines among ``names`` too costly to fit on ``n_items`` items, with the reason."""
    return {
        name: f"n_items {n_items} > {limits[name]} (dense item-item matrix)"
        for name in names
        if name in limits and n_items > limits[name]
    }


def as_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows (dicts) as columns, in first-seen key order; a key missing from a row gives None."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return {key: [row.get(key) for row in rows] for key in keys}


def comparison_table(
    rows: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    lower_is_better: Collection[str] = (),
) -> str:
    """A markdown table, one row per model and one column per metric, values to 4 decimals.

    The best value of each column is bold, and so is every value equal to it at 4 decimals: the
    highest, or the lowest for the metrics in ``lower_is_better``. Missing or NaN values show as
    ``-`` and are never best.
    """
    best: dict[str, float] = {}
    for name in metrics:
        values = [float(r[name]) for r in rows.values() if name in r and not math.isnan(r[name])]
        if values:
            best[name] = min(values) if name in lower_is_better else max(values)
    lines = [
        "| model | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for model, row in rows.items():
        cells = []
        for name in metrics:
            value = row.get(name)
            if value is None or math.isnan(value):
                cells.append("-")
                continue
            text = f"{value:.4f}"
            cells.append(f"**{text}**" if f"{best[name]:.4f}" == text else text)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
