"""Non-neural baselines the transformer has to beat: popularity, item-kNN, EASE and Markov.

Each baseline is fitted on ``split.train`` only and scores the full catalogue for any context, so
it is evaluated by the very ``evaluate_scores`` the model goes through (full ranking, seen items
filtered). Items are ``1..n_items`` and column 0 (padding) of every score row is unused.

The item-item baselines hold a dense ``(n_items + 1, n_items + 1)`` float32 matrix: 11 MB at
MovieLens-100K scale, 400 MB at 10k items. EASE needs a dense inverse anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.data.splits import Split
from recsys.evaluation.metrics import (
    Subset,
    contexts_and_targets,
    evaluate_beyond_accuracy,
    evaluate_scores,
    popularity_scores,
)

log = logging.getLogger(__name__)

SCORE_BLOCK = 1024  # contexts scored at once: (1024, n_items + 1) float32 rows
EASE_LAMBDA = 500.0  # L2 strength that suits ML-100K (Steck 2019 tunes it per dataset)
MARKOV_PRIOR = 0.5  # popularity prior, scaled into [0, 0.5]: below one transition count


class Baseline(Protocol):
    """Anything that scores contexts against the full catalogue."""

    name: str

    def score(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """Scores ``(N, n_items + 1)`` float32 for ``N`` contexts; column 0 is unused."""
        ...


def interaction_matrix(sequences: Sequence[Sequence[int]], n_items: int) -> sp.csr_matrix:
    """Binary ``(len(sequences), n_items + 1)`` float32 user-item matrix; repeats count once."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    cols = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum()))
    if cols.size and (cols.min() < 0 or cols.max() > n_items):
        raise ValueError(f"sequences contain item indices outside 0..{n_items}")
    rows = np.repeat(np.arange(len(sequences)), lengths)
    keep = cols > 0  # padding is never an interaction
    data = np.ones(int(keep.sum()), dtype=np.float32)
    mat = sp.csr_matrix((data, (rows[keep], cols[keep])), shape=(len(sequences), n_items + 1))
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


@dataclass(frozen=True)
class Popularity:
    """Most popular first, whatever the context: the counts of ``popularity_scores``."""

    counts: np.ndarray  # (n_items + 1,)
    name: str = "popularity"

    def score(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        row = self.counts.astype(np.float32)
        return np.tile(row, (len(contexts), 1))  # (N, n_items + 1)


@dataclass(frozen=True)
class ItemItem:
    """A linear item-item model: ``score = x_u @ weights`` for the binary context vector ``x_u``.

    Item-kNN (cosine similarities) and EASE (learned weights) are both of this form.
    """

    weights: np.ndarray  # (n_items + 1, n_items + 1) float32, zero diagonal
    name: str

    def score(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        n_cols = self.weights.shape[1]
        out = np.empty((len(contexts), n_cols), dtype=np.float32)
        for start in range(0, len(contexts), SCORE_BLOCK):
            block = contexts[start : start + SCORE_BLOCK]
            x = interaction_matrix(block, n_cols - 1)  # (B, n_items + 1) sparse
            out[start : start + len(block)] = x @ self.weights
        return out


@dataclass(frozen=True)
class Markov:
    """First-order Markov chain: the transition counts out of the context's last item.

    ``prior`` (popularity scaled into ``[0, MARKOV_PRIOR]``) is added to every row: it never
    outweighs one transition, only breaks ties, and is the whole score when the last item has no
    outgoing transition in training or the context is empty.
    """

    transitions: sp.csr_matrix  # (n_items + 1, n_items + 1), row = from, column = to
    prior: np.ndarray  # (n_items + 1,) float32
    name: str = "markov"

    def score(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        n_items = self.transitions.shape[0] - 1
        last = np.fromiter((c[-1] if len(c) else 0 for c in contexts), np.int64, len(contexts))
        if last.size and (last.min() < 0 or last.max() > n_items):
            raise ValueError(f"contexts contain item indices outside 0..{n_items}")
        out = np.empty((len(contexts), n_items + 1), dtype=np.float32)
        for start in range(0, len(contexts), SCORE_BLOCK):
            rows = self.transitions[last[start : start + SCORE_BLOCK]].toarray()  # (B, n + 1)
            out[start : start + len(rows)] = rows + self.prior
        return out


def fit_popularity(train: Sequence[Sequence[int]], n_items: int) -> Popularity:
    """The most-popular baseline of ``recsys.evaluation.metrics``, as a ``Baseline``."""
    return Popularity(popularity_scores(train, n_items))


def fit_item_knn(
    train: Sequence[Sequence[int]], n_items: int, neighbours: int | None = None
) -> ItemItem:
    """Item-kNN: cosine similarity of items' binary user columns, self-similarity zeroed.

    With ``neighbours`` only the ``neighbours`` most similar context items count towards each
    candidate item (each column of the similarity matrix keeps its top ``neighbours`` entries);
    by default every item is a neighbour.
    """
    x = interaction_matrix(train, n_items)
    co = (x.T @ x).toarray().astype(np.float32)  # (n + 1, n + 1) co-occurrence counts
    norms = np.sqrt(np.diag(co)).copy()
    norms[norms == 0] = 1.0  # items never seen in training: all-zero rows and columns
    sim = co / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    if neighbours is not None:
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours}")
        if neighbours < n_items:
            keep = np.argpartition(sim, -neighbours, axis=0)[-neighbours:]  # (k, n + 1) rows
            mask = np.zeros_like(sim, dtype=bool)
            mask[keep, np.arange(sim.shape[1])[None, :]] = True
            sim = np.where(mask, sim, np.float32(0.0))
    return ItemItem(sim.astype(np.float32), name="item_knn")


def fit_ease(train: Sequence[Sequence[int]], n_items: int, lam: float = EASE_LAMBDA) -> ItemItem:
    """EASE (Steck 2019): ``B = I - P / diag(P)`` with ``P = (X^T X + lam I)^-1``, zero diagonal.

    The closed form of ``min ||X - X B||^2 + lam ||B||^2`` subject to ``diag(B) = 0``; it is
    computed in float64 and stored in float32.
    """
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    x = interaction_matrix(train, n_items)
    gram = (x.T @ x).toarray().astype(np.float64)  # (n + 1, n + 1)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]  # B_ij = -P_ij / P_jj off the diagonal
    np.fill_diagonal(b, 0.0)
    return ItemItem(b.astype(np.float32), name="ease")


def fit_markov(
    train: Sequence[Sequence[int]], n_items: int, prior_weight: float = MARKOV_PRIOR
) -> Markov:
    """Transition counts ``a -> b`` of consecutive items in ``train``, plus a popularity prior."""
    if not 0 <= prior_weight < 1:
        raise ValueError(f"prior_weight must be in [0, 1) to only break ties, got {prior_weight}")
    pairs = np.asarray(
        [(a, b) for seq in train for a, b in zip(seq[:-1], seq[1:], strict=True)], dtype=np.int64
    ).reshape(-1, 2)  # (n_transitions, 2): from, to
    src, dst = pairs[:, 0], pairs[:, 1]
    if pairs.size and (pairs.min() < 0 or pairs.max() > n_items):
        raise ValueError(f"train contains item indices outside 0..{n_items}")
    data = np.ones(src.size, dtype=np.float32)
    trans = sp.csr_matrix((data, (src, dst)), shape=(n_items + 1, n_items + 1))
    trans.sum_duplicates()
    counts = popularity_scores(train, n_items)
    prior = prior_weight * counts / max(counts.max(), 1.0)
    return Markov(trans, prior.astype(np.float32))


FITTERS: dict[str, Callable[..., Baseline]] = {
    "popularity": fit_popularity,
    "item_knn": fit_item_knn,
    "ease": fit_ease,
    "markov": fit_markov,
}


def evaluate_baselines(
    split: Split,
    n_items: int,
    k: int = 10,
    on: Subset = "test",
    params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """Fit every baseline of ``FITTERS`` on ``split.train`` and evaluate it on ``on``.

    ``params`` holds keyword arguments per baseline name, e.g. ``{"ease": {"lam": 200.0}}``.
    Each entry has the accuracy metrics of ``evaluate_scores`` and the beyond-accuracy metrics
    of ``evaluate_beyond_accuracy`` (coverage, novelty and popularity bias of the top ``k``).
    """
    contexts, targets = contexts_and_targets(split, on)
    if not targets:
        raise ValueError(f"split has no {on} users to evaluate")
    counts = popularity_scores(split.train, n_items)
    results: dict[str, dict[str, float]] = {}
    for name, fit in FITTERS.items():
        baseline = fit(split.train, n_items, **(params or {}).get(name, {}))
        scores = baseline.score(contexts)  # (N, n_items + 1)
        metrics = evaluate_scores(scores, contexts, targets, k=k)
        metrics.update(evaluate_beyond_accuracy(scores, contexts, counts, k=k))
        log.info("%s on %s: %s", name, on, metrics)
        results[name] = metrics
    return results
