"""Offline evaluation: full-catalogue ranking and its metrics (the splits: ``recsys.data.splits``).

Everything here is a pure function on in-memory data. Items are integer indices ``1..n_items``
(0 is padding); a dataset is ``list[list[int]]``, one time-ordered history per user.

Ranking is done against the whole catalogue (no sampled negatives), with the items a user has
already seen filtered out, because sampled metrics disagree with full ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from recsys.data.splits import Split

if TYPE_CHECKING:  # model.py imports torch; only needed when a model is actually evaluated
    from recsys.model.sasrec import SASRec

Subset = Literal["valid", "test"]
RANK_BLOCK = 1024  # rows ranked at once


def _as_ranks(ranks: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("cannot compute a ranking metric on zero users (empty ranks)")
    if np.any(arr < 0):
        raise ValueError("ranks are 0-based and must be >= 0")
    return arr


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def hit_rate_at_k(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """Share of users whose target is in the top ``k`` (0-based ``rank < k``)."""
    _check_k(k)
    arr = _as_ranks(ranks)
    return float(np.mean(arr < k))


def ndcg_at_k(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item per user: ``1 / log2(rank + 2)`` if ``rank < k`` else 0."""
    _check_k(k)
    arr = _as_ranks(ranks)
    gains = np.where(arr < k, 1.0 / np.log2(arr + 2.0), 0.0)
    return float(np.mean(gains))


def mrr(ranks: Sequence[int] | np.ndarray) -> float:
    """Mean reciprocal rank over the full ranking (not truncated at k)."""
    arr = _as_ranks(ranks)
    return float(np.mean(1.0 / (arr + 1.0)))


def rank_targets(
    scores: np.ndarray, targets: Sequence[int], contexts: Sequence[Sequence[int]]
) -> np.ndarray:
    """0-based rank of each row's target against the full catalogue.

    ``scores`` is ``(N, n_items + 1)``; column 0 (padding) and the items in each row's context
    (already seen) are excluded, except the target itself, which is never excluded. The rank is
    the number of remaining items with a *strictly* higher score, so ties are counted in the
    target's favour (optimistic). Models with continuous scores almost never tie; for count-based
    baselines such as popularity this flatters the baseline, which only makes comparisons against
    it harder to win. A target scored ``-inf`` (an item the model does not know) ranks behind
    every item that has a finite score.
    """
    scores = np.asarray(scores)
    n_rows, n_cols = scores.shape
    tgt = np.asarray(targets, dtype=np.int64)
    if len(tgt) != n_rows or len(contexts) != n_rows:
        raise ValueError(
            f"scores has {n_rows} rows but got {len(tgt)} targets and {len(contexts)} contexts"
        )
    if np.any(tgt < 1) or np.any(tgt >= n_cols):
        raise ValueError(f"targets must lie in 1..{n_cols - 1}")
    ranks = np.empty(n_rows, dtype=np.int64)
    for start in range(0, n_rows, RANK_BLOCK):  # bounded memory on large catalogues
        stop = min(start + RANK_BLOCK, n_rows)
        ranks[start:stop] = _rank_block(scores[start:stop], tgt[start:stop], contexts[start:stop])
    return ranks


def _rank_block(
    scores: np.ndarray, targets: np.ndarray, contexts: Sequence[Sequence[int]]
) -> np.ndarray:
    n_rows, n_cols = scores.shape
    rows = np.arange(n_rows)
    target_scores = scores[rows, targets].astype(np.float64)  # (B,)
    masked = scores.astype(np.float64, copy=True)  # (B, n_items + 1), never mutate the input
    masked[:, 0] = -np.inf
    lengths = np.fromiter((len(c) for c in contexts), dtype=np.int64, count=n_rows)
    if lengths.sum() > 0:
        seen_rows = np.repeat(rows, lengths)  # (sum(len),)
        seen_cols = np.concatenate([np.asarray(c, dtype=np.int64) for c in contexts if len(c)])
        ok = (seen_cols >= 0) & (seen_cols < n_cols)
        masked[seen_rows[ok], seen_cols[ok]] = -np.inf
    # The target column is either -inf now or equal to its own score: never strictly higher.
    return (masked > target_scores[:, None]).sum(axis=1)


def popularity_scores(train: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    """Interaction counts per item, shape ``(n_items + 1,)``; column 0 (padding) stays 0."""
    flat = [i for seq in train for i in seq]
    items = np.asarray(flat, dtype=np.int64)
    if items.size and (items.min() < 0 or items.max() > n_items):
        raise ValueError(f"train contains item indices outside 0..{n_items}")
    counts = np.bincount(items, minlength=n_items + 1).astype(np.float64)
    counts[0] = 0.0
    return counts


def evaluate_scores(
    scores: np.ndarray,
    contexts: Sequence[Sequence[int]],
    targets: Sequence[int],
    k: int = 10,
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of full-catalogue ``scores`` ``(N, n_items + 1)``.

    Keys use the actual k: ``{"hr_at_10", "ndcg_at_10", "mrr", "n_users"}`` for ``k=10``.
    """
    ranks = rank_targets(scores, targets, contexts)
    return {
        f"hr_at_{k}": hit_rate_at_k(ranks, k),
        f"ndcg_at_{k}": ndcg_at_k(ranks, k),
        "mrr": mrr(ranks),
        "n_users": int(len(ranks)),
    }


def contexts_and_targets(split: Split, on: Subset) -> tuple[list[list[int]], list[int]]:
    """The (contexts, targets) pair of the ``"valid"`` or ``"test"`` part of a split."""
    if on == "test":
        return split.test_context, split.test_target
    if on == "valid":
        return split.valid_context, split.valid_target
    raise ValueError(f"on must be 'valid' or 'test', got {on!r}")


def evaluate_popularity(
    split: Split, n_items: int, k: int = 10, on: Subset = "test"
) -> dict[str, float]:
    """Most-popular baseline: every user gets the same ``split.train`` counts as scores."""
    contexts, targets = contexts_and_targets(split, on)
    if not targets:
        raise ValueError(f"split has no {on} users to evaluate")
    pop = popularity_scores(split.train, n_items)  # (n_items + 1,)
    scores = np.broadcast_to(pop, (len(targets), n_items + 1))  # read-only view, no copy
    return evaluate_scores(scores, contexts, targets, k=k)


def evaluate_model(
    model: SASRec,
    split: Split,
    n_items: int,
    k: int = 10,
    on: Subset = "test",
    batch_size: int = 256,
) -> dict[str, float]:
    """Metrics of ``model`` on the valid or test part of ``split`` over a catalogue of ``n_items``.

    The model may know fewer items than ``n_items`` (an older champion on newer data): items it
    does not know score ``-inf`` and so rank last.
    """
    from recsys.model.sasrec import score_contexts  # torch is only needed here

    contexts, targets = contexts_and_targets(split, on)
    if not targets:
        raise ValueError(f"split has no {on} users to evaluate")
    scores = score_contexts(model, contexts, n_items, batch_size=batch_size)
    return evaluate_scores(scores, contexts, targets, k=k)


def top_k(scores: np.ndarray, contexts: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """The ``k`` best items per row, ``(N, k)`` int64, best first; ``scores`` is ``(N, n + 1)``.

    Column 0 (padding), the items in each row's context (already seen) and items scored ``-inf``
    are never recommended; slots left when fewer than ``k`` items remain hold 0. Ties go to the
    lower item index, so the lists are deterministic.
    """
    _check_k(k)
    scores = np.asarray(scores)
    n_rows, n_cols = scores.shape
    if len(contexts) != n_rows:
        raise ValueError(f"scores has {n_rows} rows but got {len(contexts)} contexts")
    out = np.zeros((n_rows, k), dtype=np.int64)
    width = min(k, n_cols)
    for start in range(0, n_rows, RANK_BLOCK):  # bounded memory on large catalogues
        stop = min(start + RANK_BLOCK, n_rows)
        masked = _mask_seen(scores[start:stop], contexts[start:stop])  # (B, n_items + 1)
        order = np.argsort(-masked, axis=1, kind="stable")[:, :width]  # (B, width)
        best = np.take_along_axis(masked, order, axis=1)
        out[start:stop, :width] = np.where(np.isneginf(best), 0, order)
    return out


def _mask_seen(scores: np.ndarray, contexts: Sequence[Sequence[int]]) -> np.ndarray:
    """A float64 copy of ``scores`` with column 0 and each row's context items set to ``-inf``."""
    n_rows, n_cols = scores.shape
    masked = scores.astype(np.float64, copy=True)
    masked[:, 0] = -np.inf
    lengths = np.fromiter((len(c) for c in contexts), dtype=np.int64, count=n_rows)
    if lengths.sum() > 0:
        rows = np.repeat(np.arange(n_rows), lengths)
        cols = np.concatenate([np.asarray(c, dtype=np.int64) for c in contexts if len(c)])
        ok = (cols >= 0) & (cols < n_cols)
        masked[rows[ok], cols[ok]] = -np.inf
    return masked


def _recommended(topk: np.ndarray, n_items: int) -> np.ndarray:
    """The non-empty slots of ``topk`` (0 marks an empty slot), flattened and range-checked."""
    items = np.asarray(topk, dtype=np.int64).reshape(-1)
    items = items[items != 0]
    if items.size == 0:
        raise ValueError("top-k lists are empty: nothing was recommended")
    if items.min() < 1 or items.max() > n_items:
        raise ValueError(f"top-k lists contain item indices outside 1..{n_items}")
    return items


def catalogue_coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the ``n_items`` catalogue that appears in at least one top-k list."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    return float(np.unique(_recommended(topk, n_items)).size / n_items)


def _shares(item_counts: np.ndarray) -> tuple[np.ndarray, float]:
    counts = np.asarray(item_counts, dtype=np.float64).reshape(-1)
    total = float(counts[1:].sum())
    if total <= 0 or np.any(counts < 0):
        raise ValueError("item_counts must be non-negative with a positive total")
    return counts, total


def novelty(topk: np.ndarray, item_counts: np.ndarray) -> float:
    """Mean self-information ``-log2 p(i)`` of the recommended items, in bits.

    ``item_counts`` is ``(n_items + 1,)`` training counts (``popularity_scores``) and
    ``p(i) = count(i) / total``. An item never seen in training counts as seen once, so it gets
    the finite maximum ``log2(total)`` instead of infinity (the smoothed shares then sum to
    slightly more than 1, which only matters for catalogues of mostly unseen items).
    """
    counts, total = _shares(item_counts)
    items = _recommended(topk, counts.size - 1)
    return float(np.mean(-np.log2(np.maximum(counts[items], 1.0) / total)))


def popularity_bias(topk: np.ndarray, item_counts: np.ndarray) -> float:
    """Average recommendation popularity (ARP): mean training share ``count(i) / total`` of the
    recommended items; items never seen in training count 0. Lower means less popularity-biased.
    """
    counts, total = _shares(item_counts)
    items = _recommended(topk, counts.size - 1)
    return float(np.mean(counts[items] / total))


def evaluate_beyond_accuracy(
    scores: np.ndarray,
    contexts: Sequence[Sequence[int]],
    item_counts: np.ndarray,
    k: int = 10,
) -> dict[str, float]:
    """Coverage, novelty and popularity bias of the top ``k`` of ``scores`` ``(N, n_items + 1)``.

    Keys use the actual k: ``{"coverage_at_10", "novelty_at_10", "arp_at_10"}`` for ``k=10``.
    """
    lists = top_k(scores, contexts, k)  # (N, k)
    n_items = np.asarray(scores).shape[1] - 1
    return {
        f"coverage_at_{k}": catalogue_coverage(lists, n_items),
        f"novelty_at_{k}": novelty(lists, item_counts),
        f"arp_at_{k}": popularity_bias(lists, item_counts),
    }
