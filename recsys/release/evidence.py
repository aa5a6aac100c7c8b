"""What the promotion gate knows about a model: its ranks, coverage, cold-start slice and
latency on the frozen evaluation set, measured through the serving class (``Recommender``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from recsys.data.splits import Split
from recsys.evaluation.metrics import catalogue_coverage, rank_targets, top_k
from recsys.model.recommender import Recommender
from recsys.model.sasrec import score_contexts
from recsys.release.gate import GateConfig, ModelEvidence

USER_BLOCK = 1024  # users scored at once: (1024, n_items + 1) floats
LATENCY_REQUESTS = 200


def latency_p95_ms(
    recommenders: Sequence[Recommender], histories: Sequence[Sequence[str]], k: int, warmup: int = 5
) -> list[float]:
    """p95 wall time in ms of ``recommend`` for each recommender, measured interleaved.

    Each history is sent to every recommender in turn (the order alternating between requests),
    so that a busy machine slows all of them alike and the comparison stays fair.
    """
    if not histories:
        raise ValueError("no histories to time")
    for rec in recommenders:
        for history in histories[:warmup]:
            rec.recommend(history, k=k)
    times: list[list[float]] = [[] for _ in recommenders]
    for n, history in enumerate(histories):
        order = range(len(recommenders)) if n % 2 == 0 else reversed(range(len(recommenders)))
        for i in order:
            t0 = time.perf_counter()
            recommenders[i].recommend(history, k=k)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [float(np.percentile(t, 95)) for t in times]


def latency_sample(
    split: Split, item_ids: Sequence[str], seed: int, n: int = LATENCY_REQUESTS
) -> list[list[str]]:
    """A seeded sample of the evaluation users' histories, as item ids, to time requests with."""
    contexts = split.test_context
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(contexts), size=min(n, len(contexts)), replace=False)
    return [[item_ids[i - 1] for i in contexts[int(u)]] for u in sample]


def smoke(recommender: Recommender, history: Sequence[str], k: int) -> str:
    """An empty string if a serving request works, else what went wrong (infra validation)."""
    try:
        recs = recommender.recommend(history, k=k)
    except Exception as err:  # any failure is the finding, not a crash of the gate
        return f"{type(err).__name__}: {err}"
    if not recs:
        return "empty recommendation list"
    unknown = [item for item, _ in recs if item not in recommender.index]
    if unknown:
        return f"recommended unknown items {unknown[:3]}"
    if any(not np.isfinite(score) for _, score in recs):
        return "non-finite scores"
    return ""


def gather(
    recommender: Recommender,
    split: Split,
    item_ids: Sequence[str],
    cfg: GateConfig,
    old_ndcg: float | None = None,
) -> ModelEvidence:
    """Evidence on the test part of ``split`` whose item indices refer to ``item_ids``.

    The model may know fewer items than the snapshot (an older champion): items it does not
    know rank last. ``p95_ms`` is left NaN: the caller times every model it compares in one
    ``latency_p95_ms([a, b], ...)`` call, which is fair on a busy machine.
    """
    n_items, k = len(item_ids), cfg.k
    contexts, targets = split.test_context, split.test_target
    if not targets:
        raise ValueError("the evaluation set has no users")
    ranks, tops = [], []
    for start in range(0, len(targets), USER_BLOCK):
        ctx = contexts[start : start + USER_BLOCK]
        scores = score_contexts(recommender.model, ctx, n_items)  # (B, n_items + 1)
        ranks.append(rank_targets(scores, targets[start : start + USER_BLOCK], ctx))
        tops.append(top_k(scores, ctx, k))
    rank_arr = np.concatenate(ranks)
    cold = np.array([len(c) + 1 <= cfg.cold_start_max_events for c in contexts])
    histories = latency_sample(split, item_ids, cfg.seed)
    error = smoke(recommender, histories[0], k)
    return ModelEvidence(
        ranks=rank_arr,
        coverage=catalogue_coverage(np.concatenate(tops), n_items),
        p95_ms=float("nan"),
        cold_ranks=rank_arr[cold],
        old_ndcg=old_ndcg,
        smoke_ok=not error,
        smoke_error=error,
    )
