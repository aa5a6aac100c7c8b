"""What the promotion gate knows about a model: its ranks, coverage, cold-start slice and
latency on the frozen evaluation set, measured through the serving class (``Recommender``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from recsys.evaluate import Split, catalogue_coverage, rank_targets, top_k
from recsys.gate import GateConfig, ModelEvidence
from recsys.model import score_contexts
from recsys.recommender import Recommender

USER_BLOCK = 1024  # users scored at once: (1024, n_items + 1) floats
LATENCY_REQUESTS = 200


def latency_p95_ms(
    recommender: Recommender, histories: Sequence[Sequence[str]], k: int, warmup: int = 5
) -> float:
    """p95 wall time in ms of ``recommender.recommend``, one request per history, in order."""
    if not histories:
        raise ValueError("no histories to time")
    for history in histories[:warmup]:
        recommender.recommend(history, k=k)
    times = []
    for history in histories:
        t0 = time.perf_counter()
        recommender.recommend(history, k=k)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 95))


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
    know rank last. Latency is measured on a seeded sample of the same users' histories.
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
    rng = np.random.default_rng(cfg.seed)
    sample = rng.choice(len(contexts), size=min(LATENCY_REQUESTS, len(contexts)), replace=False)
    histories = [[item_ids[i - 1] for i in contexts[int(u)]] for u in sample]
    error = smoke(recommender, histories[0], k)
    return ModelEvidence(
        ranks=rank_arr,
        coverage=catalogue_coverage(np.concatenate(tops), n_items),
        p95_ms=latency_p95_ms(recommender, histories, k) if not error else float("nan"),
        cold_ranks=rank_arr[cold],
        old_ndcg=old_ndcg,
        smoke_ok=not error,
        smoke_error=error,
    )
