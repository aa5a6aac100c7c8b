"""Quality benchmark: baselines (and optionally SASRec) on MovieLens-100K, leave-last-out.

    .venv/bin/python bench/quality.py                  # baselines only, well under a minute
    .venv/bin/python bench/quality.py --model --seeds 3
    .venv/bin/python bench/quality.py --no-mlflow      # print only
    .venv/bin/python bench/quality.py --data synthetic --model   # 1M events, 20,000 users
    python bench/quality.py --model --seeds 3 --device cuda      # the same, trained on a GPU

``--data synthetic`` checks that the defaults are not tuned to MovieLens:
``recsys.data.synthetic``'s walks (next item 1-3 steps along a ring of ``--synthetic-items``
items, 10% random jumps, 2% taste drift) for ``--synthetic-events`` events, a larger and denser
catalogue.

Each user's ratings are ordered by time (then event id); items are numbered 1..n by first
appearance. The last item of each user is the test target, the one before it the validation
target (used by SASRec for checkpoint selection only). Prints HR@k, NDCG@k, MRR (full ranking,
seen items filtered), catalogue coverage@k, novelty@k (bits) and ARP@k, with mean ± std over seeds
for the model, and the wall time of each row; with ``--model`` also the training cost of each
seed (wall seconds of the full retrain, epochs run, best epoch, training tokens per second). The
data is cached in a temporary folder, never in the repository. Results (and each seed's learning
curve) are logged to the MLflow experiment ``bench-quality`` unless ``--no-mlflow``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from common import device_label

from recsys import schema as S
from recsys.config import ModelConfig, TrainConfig
from recsys.data.movielens import load_ml100k
from recsys.data.splits import Split, leave_last_out
from recsys.evaluation.baselines import FITTERS
from recsys.evaluation.metrics import evaluate_beyond_accuracy, evaluate_scores, popularity_scores

if TYPE_CHECKING:  # torch is only imported when SASRec is trained
    from recsys.training.loop import TrainResult

METRICS = ("hr_at_{k}", "ndcg_at_{k}", "mrr", "coverage_at_{k}", "novelty_at_{k}", "arp_at_{k}")


def to_sequences(records: list[dict[str, Any]]) -> tuple[list[list[int]], int]:
    """(sequences, n_items) of time-sorted ``records``: each user's items in order (users sorted
    by id), items numbered 1..n by first appearance."""
    index: dict[str, int] = {}
    per_user: dict[str, list[int]] = {}
    for rec in records:
        item = index.setdefault(rec[S.ITEM_ID], len(index) + 1)
        per_user.setdefault(rec[S.USER_ID], []).append(item)
    return [per_user[u] for u in sorted(per_user)], len(index)


def ml100k_sequences(cache_dir: Path, ties: str = "event_id") -> tuple[list[list[int]], int]:
    """(sequences, n_items): per-user time-ordered item indices, items numbered by first use.

    Ratings in the same second are ordered by ``ties``: ``"event_id"`` (as ``recsys.data.features``
    does; the id embeds the item id, so this order is lexicographic in item ids) or ``"file"``
    (the order of the data file).
    """
    records = load_ml100k(None, cache_dir)
    if ties == "event_id":
        records.sort(key=lambda r: (r[S.EVENT_TIME], r[S.EVENT_ID]))
    else:
        records.sort(key=lambda r: r[S.EVENT_TIME])  # stable: file order within a second
    return to_sequences(records)


def synthetic_sequences(n_events: int, n_items: int, seed: int = 0) -> tuple[list[list[int]], int]:
    """(sequences, n_items) of about ``n_events`` synthetic events, 30 to 70 per user."""
    from recsys.data.synthetic import generate

    records = generate(
        n_users=max(n_events // 50, 1), n_items=n_items, events_per_user=(30, 70), days=30,
        drift=0.02, seed=seed,
    )  # fmt: skip
    records.sort(key=lambda r: (r[S.EVENT_TIME], r[S.EVENT_ID]))
    return to_sequences(records)


def metrics_of(scores: np.ndarray, split: Split, n_items: int, k: int) -> dict[str, float]:
    """Accuracy and beyond-accuracy metrics of ``scores`` on the test part of ``split``."""
    counts = popularity_scores(split.train, n_items)
    out = evaluate_scores(scores, split.test_context, split.test_target, k=k)
    out.update(evaluate_beyond_accuracy(scores, split.test_context, counts, k=k))
    return out


def run_model(
    split: Split,
    n_items: int,
    k: int,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    device: str = "cpu",
) -> tuple[dict[str, float], TrainResult]:
    """Train SASRec with the given configs on ``device``, then score the test contexts (CPU)."""
    from recsys.model.sasrec import build_model, score_contexts
    from recsys.training.loop import train

    result = train(split, n_items, model_cfg, train_cfg, device=device)
    model = build_model(result.checkpoint)
    scores = score_contexts(model, split.test_context, n_items)
    return metrics_of(scores, split, n_items, k), result


def training_cost(seed: int, result: TrainResult) -> dict[str, Any]:
    """One row of the training-cost table: what the full retrain of ``seed`` cost."""
    return {
        "seed": seed,
        "wall_s": result.seconds,
        "epochs": len(result.losses),
        "best_epoch": result.best_epoch,
        "tokens_per_s": result.tokens_per_s,
    }


def print_training_cost(rows: list[dict[str, Any]]) -> None:
    print(f"\ntraining cost{'seed':>7}{'wall s':>10}{'epochs':>8}{'best ep':>9}{'tokens/s':>11}")
    for r in rows:
        print(
            f"{'sasrec':<13}{r['seed']:>7}{r['wall_s']:>10.1f}{r['epochs']:>8}"
            f"{r['best_epoch']:>9}{r['tokens_per_s']:>11.0f}"
        )


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


def mean_row(name: str, runs: list[dict[str, float]], seconds: float, k: int) -> dict[str, Any]:
    """The table row of ``format_row`` as a dict (means, plus stds over several runs)."""
    row: dict[str, Any] = {"model": name}
    for key in (m.format(k=k) for m in METRICS):
        values = [r[key] for r in runs]
        row[key] = statistics.fmean(values)
        if len(values) > 1:
            row[f"{key}_std"] = statistics.stdev(values)
    return row | {"wall_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--data", choices=("ml100k", "synthetic"), default="ml100k")
    parser.add_argument("--synthetic-events", type=int, default=1_000_000)
    parser.add_argument("--synthetic-items", type=int, default=5_000)
    parser.add_argument("--model", action="store_true", help="also train and evaluate SASRec")
    parser.add_argument("--seeds", type=int, default=1, help="SASRec seeds (mean ± std)")
    parser.add_argument(
        "--ties", choices=("event_id", "file"), default="event_id", help="same-second order"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench")
    parser.add_argument("--max-len", type=int, default=ModelConfig().max_len)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="SASRec at most")
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--eval-every", type=int, default=TrainConfig().eval_every)
    parser.add_argument("--patience", type=int, default=TrainConfig().patience)
    parser.add_argument("--item-dropout", type=float, default=TrainConfig().item_dropout)
    parser.add_argument("--lr", type=float, default=TrainConfig().lr, help="peak learning rate")
    parser.add_argument("--warmup-epochs", type=float, default=TrainConfig().warmup_epochs)
    parser.add_argument(
        "--schedule", choices=["constant", "cosine"], default=TrainConfig().schedule,
        help="learning rate after warm-up: constant, or cosine decay to 0 at --epochs",
    )  # fmt: skip
    parser.add_argument(
        "--ema-halflife", type=float, default=TrainConfig().ema_halflife_epochs,
        help="weight averaging half-life in epochs (0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--mask-seen", action=argparse.BooleanOptionalAction, default=TrainConfig().mask_seen,
        help="leave each position's seen items out of the training softmax",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where SASRec trains: cpu, cuda...")
    parser.add_argument("--no-mlflow", action="store_true", help="print only, log nothing")
    args = parser.parse_args()

    import torch

    from recsys.training.loop import resolve_device

    resolve_device(args.device)  # a GPU torch does not see: fail now, not after the baselines
    model_cfg = ModelConfig(max_len=args.max_len)
    train_cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        patience=args.patience,
        item_dropout=args.item_dropout,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        schedule=args.schedule,
        ema_halflife_epochs=args.ema_halflife,
        mask_seen=args.mask_seen,
    )
    if args.data == "synthetic":
        seqs, n_items = synthetic_sequences(args.synthetic_events, args.synthetic_items)
        title, ties = "synthetic", ""
    else:
        seqs, n_items = ml100k_sequences(args.cache, args.ties)
        title, ties = "MovieLens-100K", f", same-second ties by {args.ties}"
    split = leave_last_out(seqs, min_events=3)
    print(
        f"{title}: {len(seqs)} users, {n_items} items, {sum(map(len, seqs))} events, "
        f"{len(split.test_target)} test users{ties}"
    )
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, device {device_label(args.device)}")
    header = "".join(m.format(k=args.k).rjust(16) for m in METRICS)
    print(f"{'model':<12}{header}{'wall s':>10}")
    rows: list[dict[str, Any]] = []
    for name, fit in FITTERS.items():
        t0 = time.perf_counter()
        scores = fit(split.train, n_items).score(split.test_context)
        runs = [metrics_of(scores, split, n_items, args.k)]
        seconds = time.perf_counter() - t0
        print(format_row(name, runs, seconds, args.k), flush=True)
        rows.append(mean_row(name, runs, seconds, args.k))
    cost: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    if args.model:
        t0 = time.perf_counter()
        runs = []
        for seed in range(args.seeds):
            cfg = dataclasses.replace(train_cfg, seed=seed)
            metrics, result = run_model(split, n_items, args.k, model_cfg, cfg, args.device)
            runs.append(metrics)
            cost.append(training_cost(seed, result))
            curves[f"sasrec_seed{seed}"] = result.history
        name, seconds = f"sasrec x{args.seeds}", time.perf_counter() - t0
        print(format_row(name, runs, seconds, args.k))
        rows.append(mean_row(name, runs, seconds, args.k))
        print_training_cost(cost)
    if not args.no_mlflow:
        run_id = log_results(args, model_cfg, train_cfg, rows, cost, curves)
        print(f"logged to MLflow experiment bench-quality, run {run_id}")


def log_results(
    args: argparse.Namespace,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    rows: list[dict[str, Any]],
    cost: list[dict[str, Any]],
    curves: dict[str, list[dict[str, Any]]],
) -> str:
    """Log the quality table, the training cost and the learning curves to ``bench-quality``."""
    import torch
    from common import log_benchmark

    params = {
        "k": args.k, "data": args.data, "ties": args.ties, "model": args.model,
        "seeds": args.seeds,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": device_label(args.device),
        **{f"model.{f}": v for f, v in dataclasses.asdict(model_cfg).items()},
        **{f"train.{f}": v for f, v in dataclasses.asdict(train_cfg).items()},
    }  # fmt: skip
    metrics = {
        f"{row['model'].split()[0]}.{key}": value
        for row in rows
        for key, value in row.items()
        if key != "model"
    }
    if cost:
        metrics |= {f"sasrec.{key}": statistics.fmean(r[key] for r in cost) for key in cost[0]}
        metrics.pop("sasrec.seed")
    tables = {"quality": rows} | ({"training_cost": cost} if cost else {})
    return log_benchmark("quality", params, metrics, tables, curves)


if __name__ == "__main__":
    main()
