"""Quality benchmark: baselines (and optionally SASRec) on MovieLens-100K, leave-last-out.

    .venv/bin/python bench/quality.py                  # baselines only, well under a minute
    .venv/bin/python bench/quality.py --model --seeds 3

Each user's ratings are ordered by time (then event id); items are numbered 1..n by first
appearance. The last item of each user is the test target, the one before it the validation
target (used by SASRec for checkpoint selection only). Prints HR@k, NDCG@k, MRR (full ranking,
seen items filtered), catalogue coverage@k, novelty@k (bits) and ARP@k, with mean ± std over seeds
for the model, and the wall time of each row. The data is cached in a temporary folder, never in
the repository.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys import schema as S
from recsys.baselines import FITTERS
from recsys.evaluate import (
    Split,
    evaluate_beyond_accuracy,
    evaluate_scores,
    leave_last_out,
    popularity_scores,
)
from recsys.movielens import load_ml100k

METRICS = ("hr_at_{k}", "ndcg_at_{k}", "mrr", "coverage_at_{k}", "novelty_at_{k}", "arp_at_{k}")


def ml100k_sequences(cache_dir: Path, ties: str = "event_id") -> tuple[list[list[int]], int]:
    """(sequences, n_items): per-user time-ordered item indices, items numbered by first use.

    Ratings in the same second are ordered by ``ties``: ``"event_id"`` (as ``recsys.features``
    does; the id embeds the item id, so this order is lexicographic in item ids) or ``"file"``
    (the order of the data file).
    """
    records = load_ml100k(None, cache_dir)
    if ties == "event_id":
        records.sort(key=lambda r: (r[S.EVENT_TIME], r[S.EVENT_ID]))
    else:
        records.sort(key=lambda r: r[S.EVENT_TIME])  # stable: file order within a second
    index: dict[str, int] = {}
    per_user: dict[str, list[int]] = {}
    for rec in records:
        item = index.setdefault(rec[S.ITEM_ID], len(index) + 1)
        per_user.setdefault(rec[S.USER_ID], []).append(item)
    return [per_user[u] for u in sorted(per_user)], len(index)


def metrics_of(scores: np.ndarray, split: Split, n_items: int, k: int) -> dict[str, float]:
    """Accuracy and beyond-accuracy metrics of ``scores`` on the test part of ``split``."""
    counts = popularity_scores(split.train, n_items)
    out = evaluate_scores(scores, split.test_context, split.test_target, k=k)
    out.update(evaluate_beyond_accuracy(scores, split.test_context, counts, k=k))
    return out


def run_model(split: Split, n_items: int, k: int, seed: int) -> dict[str, float]:
    """Train SASRec with the default configs (and ``seed``), then score the test contexts."""
    from recsys.config import ModelConfig, TrainConfig
    from recsys.model import build_model, score_contexts
    from recsys.train import train

    result = train(split, n_items, ModelConfig(), TrainConfig(seed=seed))
    model = build_model(result.checkpoint)
    scores = score_contexts(model, split.test_context, n_items)
    return metrics_of(scores, split, n_items, k)


def format_row(name: str, runs: list[dict[str, float]], seconds: float, k: int) -> str:
    cells = []
    for key in (m.format(k=k) for m in METRICS):
        values = [r[key] for r in runs]
        mean = statistics.fmean(values)
        if len(values) > 1:
            cells.append(f"{mean:.4f}±{statistics.stdev(values):.4f}".rjust(16))
        else:
            cells.append(f"{mean:.4f}".rjust(16))
    return f"{name:<12}" + "".join(cells) + f"{seconds:>10.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--model", action="store_true", help="also train and evaluate SASRec")
    parser.add_argument("--seeds", type=int, default=1, help="SASRec seeds (mean ± std)")
    parser.add_argument(
        "--ties", choices=("event_id", "file"), default="event_id", help="same-second order"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench")
    args = parser.parse_args()

    seqs, n_items = ml100k_sequences(args.cache, args.ties)
    split = leave_last_out(seqs, min_events=3)
    print(
        f"MovieLens-100K: {len(seqs)} users, {n_items} items, "
        f"{sum(map(len, seqs))} events, {len(split.test_target)} test users, "
        f"same-second ties by {args.ties}"
    )
    header = "".join(m.format(k=args.k).rjust(16) for m in METRICS)
    print(f"{'model':<12}{header}{'wall s':>10}")
    for name, fit in FITTERS.items():
        t0 = time.perf_counter()
        scores = fit(split.train, n_items).score(split.test_context)
        runs = [metrics_of(scores, split, n_items, args.k)]
        print(format_row(name, runs, time.perf_counter() - t0, args.k), flush=True)
    if args.model:
        t0 = time.perf_counter()
        runs = [run_model(split, n_items, args.k, seed) for seed in range(args.seeds)]
        print(format_row(f"sasrec x{args.seeds}", runs, time.perf_counter() - t0, args.k))


if __name__ == "__main__":
    main()
