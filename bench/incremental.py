"""Incremental benchmark: daily full retrain vs. daily warm-started fine-tune, MovieLens-100K.

    .venv/bin/python bench/incremental.py                      # last 7 days, shipped configs
    .venv/bin/python bench/incremental.py --days 2 --epochs 5  # smoke run, a few minutes
    .venv/bin/python bench/incremental.py --days 28 --no-daily-full  # 4 weeks of (b) vs (c)
    .venv/bin/python bench/incremental.py --end 1998-04-02     # the busiest week instead
    .venv/bin/python bench/incremental.py --seeds 3            # seeds 42-44, mean and spread
    .venv/bin/python bench/incremental.py --warm-shrink 1.0    # fine-tunes without the shrink
    .venv/bin/python bench/incremental.py --gate               # (e): the loop the product runs

The ratings are replayed in time order, one interval per UTC day. Each of the last ``--days``
days up to ``--end`` (by default the data's last day) that has events is predicted event by event
(next item, HR@k / NDCG@k, full ranking with seen items filtered, context = the user's whole
history before the event, including earlier events of the same day;
``recsys.data.splits.next_interval_split``) by four strategies, all trained only on events
before the day:

    (a) full      a full retrain every day on everything before the day
    (b) finetune  a full retrain every ``--retrain-every`` replayed days (7: weekly, starting
                  with the first; days without events are not replayed), and on the days between
                  a fine-tune warm-started from the previous model (``TrainConfig.finetune()``)
                  on the users active since the last update, mixed with a replay of the other
                  users (``mix_replay``)
    (c) frozen    the same periodic full retrains only
    (d) popular   counts of all events before the day
    (e) gated     with ``--gate``, the loop as the product runs it: each day's retrain or
                  fine-tune (warm-started from the live model, on the users active since the
                  live model's data) goes through the real promotion gate
                  (``recsys.release.gate.decide`` with ``promotion.toml``, on the challenger's
                  leave-last-out test items, full policy for retrains, incremental for
                  fine-tunes; the latency guard-rail off: timed on a shared machine it is
                  noise, and the replay measures quality), and the day is served by whatever
                  the gate left as champion

Full retrains use ``leave_last_out(sequences, min_events=3)`` as the pipeline does (the last item
of each user is held out, the one before it selects the checkpoint). Items are numbered by first
appearance over the whole data set, so a model trained before day d knows exactly the items
``1..n(d)`` seen before d; items first seen on day d score ``-inf`` for every strategy. The
periodic full retrains are shared by (a), (b) and (c) and trained once; "update s" excludes them.
``--no-daily-full`` leaves (a) out (its daily retrains are most of the cost), so that several
weeks of (b) against (c) take minutes rather than an hour.
"(b) clearly beats (c)" is judged by the per-event NDCG@k difference: a paired bootstrap over users
(their events are not independent) gives one-sided 95% bounds, and "better" means the lower bound
is above 0. Logged to the MLflow experiment ``bench-incremental`` unless ``--no-mlflow``.
With ``--gate`` it also prints the lines scripts read: ``fine-tunes promoted: P of N``,
``live model mean age: H h`` (per served event: its time minus the end of the live model's
training data) and ``live NDCG@10: gated G, weekly only C, daily full A``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import tempfile
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys import schema as S
from recsys.config import EvalConfig, ModelConfig, TrainConfig
from recsys.data.movielens import load_ml100k
from recsys.data.splits import (
    NextIntervalSplit,
    Split,
    leave_last_out,
    mix_replay,
    next_interval_split,
)
from recsys.evaluation.metrics import hit_rate_at_k, ndcg_at_k, popularity_scores, rank_targets
from recsys.model.sasrec import Checkpoint, build_model, score_contexts
from recsys.release.gate import (
    FULL,
    INCREMENTAL,
    GateConfig,
    Verdict,
    decide,
    ndcg_per_user,
    paired_bootstrap,
)
from recsys.training.loop import TrainResult, train

DAY = 86_400  # seconds in a UTC day
BOOT = 2000  # bootstrap resamples of the users for the confidence bounds
STRATEGIES = {
    "full": "(a) full retrain daily",
    "finetune": "(b) retrain + fine-tunes",
    "frozen": "(c) retrain only",
    "popular": "(d) popularity",
    "gated": "(e) gated loop",
}


def ml100k_histories(cache_dir: Path) -> tuple[list[list[tuple[int, int]]], list[int]]:
    """(histories, first_seen): per user (by user id) time-ordered ``(item, unix seconds)``, and
    the time each item ``i`` was first rated at ``first_seen[i - 1]`` (items numbered in that
    order, so ``first_seen`` is sorted). Same-second ratings are ordered by event id."""
    records = load_ml100k(None, cache_dir)
    records.sort(key=lambda r: (r[S.EVENT_TIME], r[S.EVENT_ID]))
    index: dict[str, int] = {}
    first_seen: list[int] = []
    per_user: dict[str, list[tuple[int, int]]] = {}
    for rec in records:
        if rec[S.ITEM_ID] not in index:
            index[rec[S.ITEM_ID]] = len(index) + 1
            first_seen.append(rec[S.EVENT_TIME])
        per_user.setdefault(rec[S.USER_ID], []).append((index[rec[S.ITEM_ID]], rec[S.EVENT_TIME]))
    return [per_user[u] for u in sorted(per_user, key=int)], first_seen


def finetune_split(
    sequences: list[list[int]], active: set[int], ratio: float, seed: int, min_events: int
) -> Split:
    """Train on the active users' leave-last-out train parts plus a replay of the others';
    select on the active users' validation items only (there is no test part)."""
    new = leave_last_out([s for u, s in enumerate(sequences) if u in active], min_events)
    old = leave_last_out([s for u, s in enumerate(sequences) if u not in active], min_events)
    mixed = mix_replay(new.train, old.train, ratio, seed)
    return Split(mixed, new.valid_context, new.valid_target, [], [], [])


def model_ranks(ckpt: Checkpoint, cases: NextIntervalSplit, n_total: int) -> np.ndarray:
    scores = score_contexts(build_model(ckpt), cases.contexts, n_total)  # (N, n_total + 1)
    return rank_targets(scores, cases.targets, cases.contexts)


def popular_ranks(cases: NextIntervalSplit, n_known: int, n_total: int) -> np.ndarray:
    counts = popularity_scores(cases.train, n_total)  # (n_total + 1,)
    counts[n_known + 1 :] = -np.inf  # unknown items rank last, as for the models
    scores = np.broadcast_to(counts, (len(cases.targets), n_total + 1))
    return rank_targets(scores, cases.targets, cases.contexts)


@dataclasses.dataclass
class Replay:
    """What the replay produced: per-day rows, pooled ranks, seconds and training histories.
    ``ranks`` holds the strategies that ran (without daily retrains, (a) is left out)."""

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ranks: dict[str, list[np.ndarray]] = dataclasses.field(
        default_factory=lambda: {s: [] for s in STRATEGIES}
    )
    seconds: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(STRATEGIES, 0.0)
    )
    # Training targets processed: the work behind ``seconds``, free of the machine's noise.
    tokens: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(STRATEGIES, 0))
    users: list[list[int]] = dataclasses.field(default_factory=list)  # each case's user, by day
    shared_seconds: float = 0.0  # the periodic full retrains, counted in (a), (b) and (c)
    curves: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    n_repeats: int = 0
    ages: list[np.ndarray] = dataclasses.field(default_factory=list)  # (e): hours, per event
    decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # (e): per day


def active_users(histories: list[list[tuple[int, int]]], start: int, end: int) -> set[int]:
    """Positions of the users with at least one event in ``[start, end)``."""
    return {u for u, h in enumerate(histories) if any(start <= t < end for _, t in h)}


class RetrainCache:
    """Full retrains kept on disk, keyed by everything that determines them (the day's training
    sequences, the configs, torch): on one machine a retrain is deterministic, so a second replay
    of the same week (another gate setting) reuses them instead of training for an hour. Its
    ``seconds`` are the first run's. Off unless ``--reuse-retrains``."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def train(self, split: Split, n_known: int, model_cfg: ModelConfig,
              cfg: TrainConfig) -> TrainResult:  # fmt: skip
        if self.folder is None:
            return train(split, n_known, model_cfg, cfg)
        import hashlib
        import pickle

        what = (split.train, split.valid_context, split.valid_target, n_known, model_cfg, cfg)
        key = hashlib.sha256(pickle.dumps((what, torch.__version__)))
        path = self.folder / f"retrain-{key.hexdigest()[:24]}.pt"
        if path.exists():
            return torch.load(path, weights_only=False)
        result = train(split, n_known, model_cfg, cfg)
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(result, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        return result


def fine_tune(
    cases: NextIntervalSplit,
    active: set[int],
    n_known: int,
    model_cfg: ModelConfig,
    ft_cfg: TrainConfig,
    seed: int,
    min_events: int,
    init: Checkpoint,
) -> tuple[TrainResult | None, int]:
    """(result, training sequences) of a warm-started fine-tune; None when nothing to train on."""
    split = finetune_split(cases.train, active, ft_cfg.replay_ratio, seed, min_events)
    if not any(len(s) >= 2 for s in split.train):
        return None, 0
    return train(split, n_known, model_cfg, ft_cfg, init=init), len(split.train)


def judge(
    challenger: Checkpoint,
    champion: Checkpoint | None,
    train: list[list[int]],
    n_known: int,
    cfg: GateConfig,
    new_data: tuple[set[int], set[int]] | None,
    min_events: int,
) -> Verdict:
    """The real gate on the day's frozen evaluation set: the leave-last-out test items of
    everything before the day, scored through the serving class, both models timed together.
    ``new_data``: ``(users, items)`` with events since the champion's data (a fine-tune), whose
    cases the incremental policy calls new; None for a retrain."""
    from recsys.model.recommender import Recommender
    from recsys.release.evidence import gather, latency_p95_ms, latency_sample

    split = leave_last_out(train, min_events)
    item_ids = [str(i) for i in range(1, n_known + 1)]
    recs = [Recommender(c, item_ids) for c in (challenger, champion) if c is not None]
    evidence = [gather(r, split, item_ids, cfg) for r in recs]
    p95 = latency_p95_ms(recs, latency_sample(split, item_ids, cfg.seed), cfg.k)
    evidence = [dataclasses.replace(e, p95_ms=t) for e, t in zip(evidence, p95, strict=True)]
    mask = None
    if new_data is not None:
        users, items = new_data
        cases = zip(split.test_users, split.test_target, strict=True)
        mask = np.array([u in users or t in items for u, t in cases], dtype=bool)
    policy = FULL if new_data is None else INCREMENTAL
    champ = evidence[1] if champion is not None else None
    return decide(evidence[0], champ, cfg, policy=policy, new_data=mask)


def case_hours(
    histories: list[list[tuple[int, int]]], cases: NextIntervalSplit, since: int
) -> np.ndarray:
    """Each case's event time minus ``since`` (seconds), in hours: the served model's age."""
    times = [histories[u][len(c)][1] for u, c in zip(cases.users, cases.contexts, strict=True)]
    return (np.asarray(times, dtype=float) - since) / 3600.0


def day_row(
    date: str,
    cases: NextIntervalSplit,
    n_known: int,
    n_active: int,
    ranks: dict[str, np.ndarray],
    full: TrainResult | None,
    ft: TrainResult | None,
    n_seqs: int,
    k: int,
) -> dict[str, Any]:
    """One row of the per-day table (``full``: the day's full retrain, None if none ran)."""
    row: dict[str, Any] = {
        "day": date,
        "events": len(cases.targets),
        "new_items": int(np.sum(np.asarray(cases.targets) > n_known)),
        "known_items": n_known,
        "active_users": n_active,
    }
    row |= {f"ndcg_{s}": ndcg_at_k(r, k) for s, r in ranks.items()}
    row |= {f"hr_{s}": hit_rate_at_k(r, k) for s, r in ranks.items()}
    return row | {
        "full_s": full.seconds if full else 0.0,
        "full_epochs": len(full.losses) if full else 0,
        "finetune_s": ft.seconds if ft else 0.0,
        "finetune_epochs": len(ft.losses) if ft else 0,
        "finetune_seqs": n_seqs,
    }


def replay_days(
    histories: list[list[tuple[int, int]]], days: int, end_day: int | None = None
) -> list[int]:
    """The UTC days (days since the epoch) with events among the ``days`` days up to
    ``end_day`` inclusive (the data's last day if None); ValueError if there are none."""
    event_days = sorted({t // DAY for h in histories for _, t in h})
    end = event_days[-1] if end_day is None else end_day
    window = [d for d in event_days if end - days < d <= end]
    if not window:
        last = dt.date(1970, 1, 1) + dt.timedelta(days=end)
        raise ValueError(f"no events in the {days} UTC days up to {last}")
    return window


def replay(
    histories: list[list[tuple[int, int]]],
    first_seen: list[int],
    days: int,
    model_cfg: ModelConfig,
    full_cfg: TrainConfig,
    ft_cfg: TrainConfig,
    k: int,
    min_events: int,
    retrain_every: int = 7,
    daily_full: bool = True,
    end_day: int | None = None,
    gate: GateConfig | None = None,
    retrains: RetrainCache | None = None,
) -> Replay:
    """Replay the ``days`` UTC days up to ``end_day`` (days since the epoch, inclusive; the
    data's last day if None) that have events, training and scoring each day.

    Every ``retrain_every``-th day (the first included) all three models take that day's full
    retrain; (b) fine-tunes from it on the days between, (c) keeps it. Without ``daily_full``
    only those periodic retrains run and (a) is left out. With ``gate``, (e) runs too.
    """
    n_total = len(first_seen)
    window = replay_days(histories, days, end_day)
    out = Replay()
    if not daily_full:
        del out.ranks["full"]
    if gate is None:
        del out.ranks["gated"]
    live: Checkpoint | None = None  # (e): what the gate left as champion...
    live_start = 0  # ...and the end of its training data (seconds)
    first: Checkpoint | None = None  # the latest periodic full retrain
    tuned: Checkpoint | None = None  # the latest fine-tune (or periodic retrain)
    prev_start = 0
    for step, day in enumerate(window):
        start = day * DAY
        date = dt.datetime.fromtimestamp(start, tz=dt.UTC).date().isoformat()
        cases = next_interval_split(histories, start, start + DAY)
        out.n_repeats += cases.n_repeats
        n_known = bisect_left(first_seen, start)  # items rated before the day
        retrain = step % retrain_every == 0
        full = None
        if retrain or daily_full:
            full = (retrains or RetrainCache(None)).train(
                leave_last_out(cases.train, min_events), n_known, model_cfg, full_cfg
            )
            out.curves[f"full_{date}"] = full.history
            out.seconds["full"] += full.seconds
            out.tokens["full"] += full.tokens
        ft, n_seqs, active = None, 0, set()
        parent_b = tuned  # (b)'s fine-tune of the day warm-starts from this
        if retrain:
            assert full is not None
            first = tuned = full.checkpoint
            out.shared_seconds += full.seconds
            out.seconds["finetune"] += full.seconds
            out.seconds["frozen"] += full.seconds
            out.tokens["finetune"] += full.tokens
            out.tokens["frozen"] += full.tokens
        else:
            assert first is not None and tuned is not None
            active = active_users(histories, prev_start, start)  # since the last update
            seed = ft_cfg.seed + step
            ft, n_seqs = fine_tune(
                cases, active, n_known, model_cfg, ft_cfg, seed, min_events, tuned
            )
            if ft is not None:
                tuned = ft.checkpoint
                out.seconds["finetune"] += ft.seconds
                out.tokens["finetune"] += ft.tokens
                out.curves[f"finetune_{date}"] = ft.history
        if gate is not None:
            parent_is_b = ft is not None and live is parent_b and live_start == prev_start
            cand, new_data = full, None  # a retrain day: the retrain is the challenger
            if not retrain:
                new_data = active_users(histories, live_start, start)
                cand = ft if parent_is_b else None  # the same fine-tune as (b)'s: reuse it
                if cand is None:
                    seed = ft_cfg.seed + step
                    cand, _ = fine_tune(
                        cases, new_data, n_known, model_cfg, ft_cfg, seed, min_events, live
                    )
            out.seconds["gated"] += cand.seconds if cand else 0.0
            out.tokens["gated"] += cand.tokens if cand else 0
            decision = {"day": date, "challenger": "retrain" if retrain else "fine-tune"}
            if cand is None:
                decision |= {"promoted": False, "reason": "nothing to fine-tune on"}
            else:
                new = None
                if new_data is not None:
                    items = {i for h in histories for i, t in h if live_start <= t < start}
                    new = (new_data, items)
                verdict = judge(cand.checkpoint, live, cases.train, n_known, gate, new, min_events)
                notes = {c.name: c.note for c in verdict.criteria if "ndcg" in c.name}
                decision |= {"promoted": verdict.promote, "reason": verdict.reason,
                             "policy": verdict.policy, "criteria": notes}  # fmt: skip
                if verdict.promote:
                    live, live_start = cand.checkpoint, start
            out.decisions.append(decision)
            assert live is not None
            out.ages.append(case_hours(histories, cases, live_start))
            print(f"  {date} gate: {decision['challenger']} "
                  f"{'PROMOTED' if decision['promoted'] else 'rejected'}: {decision['reason']}",
                  flush=True)  # fmt: skip
            for name, note in decision.get("criteria", {}).items():
                print(f"      {name}: {note}", flush=True)
        ranks = {"full": model_ranks(full.checkpoint, cases, n_total)} if full else {}
        ranks["finetune"] = ranks["full"] if retrain else model_ranks(tuned, cases, n_total)
        ranks["frozen"] = ranks["full"] if retrain else model_ranks(first, cases, n_total)
        ranks["popular"] = popular_ranks(cases, n_known, n_total)
        if gate is not None:
            ranks["gated"] = model_ranks(live, cases, n_total)
        ranks = {s: ranks[s] for s in out.ranks}  # (a) only when it ran every day
        for s, r in ranks.items():
            out.ranks[s].append(r)
        out.users.append(cases.users)
        row = day_row(date, cases, n_known, len(active), ranks, full, ft, n_seqs, k)
        out.rows.append(row)
        print(
            f"  {date}: {row['events']} events, full retrain {row['full_s']:.1f}s "
            f"({row['full_epochs']} epochs), fine-tune {row['finetune_s']:.1f}s "
            f"({row['finetune_epochs']} epochs), NDCG@{k} full {row.get('ndcg_full', np.nan):.4f} "
            f"finetune {row['ndcg_finetune']:.4f} frozen {row['ndcg_frozen']:.4f}",
            flush=True,
        )
        prev_start = start
    return out


def summarise(result: Replay, k: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One row per strategy that ran (pooled over all events of the window) and the headline
    ratios (NaN where (a) did not run)."""
    rows = []
    for s in result.ranks:
        label = STRATEGIES[s]
        ranks = np.concatenate(result.ranks[s])
        seconds = result.seconds[s]
        update = seconds - result.shared_seconds if s != "popular" else 0.0
        rows.append(
            {
                "strategy": label,
                f"hr_at_{k}": hit_rate_at_k(ranks, k),
                f"ndcg_at_{k}": ndcg_at_k(ranks, k),
                "train_s": seconds,
                "update_s": max(update, 0.0),
            }
        )
    by = {s: row for s, row in zip(result.ranks, rows, strict=True)}
    nan = {"strategy": "", f"ndcg_at_{k}": np.nan, "train_s": np.nan, "update_s": np.nan}
    by.setdefault("full", nan)
    ndcg = f"ndcg_at_{k}"
    ratios = {
        "ndcg_ratio_finetune_vs_full": by["finetune"][ndcg] / by["full"][ndcg],
        "ndcg_ratio_finetune_vs_frozen": by["finetune"][ndcg] / by["frozen"][ndcg],
        "time_ratio_finetune_vs_full": by["finetune"]["train_s"] / by["full"]["train_s"],
        # The same in training targets processed: what the seconds measure, without the
        # machine's noise (validation checks, which the seconds include, are left out).
        "token_ratio_finetune_vs_full": (
            result.tokens["finetune"] / result.tokens["full"]
            if result.tokens.get("full")
            else float("nan")
        ),
        # ... which is the sum of these two shares of (a)'s time: the periodic retrains (b)
        # shares with (a), a floor of about 1 / retrain_every, and (b)'s own daily updates.
        "retrain_share_finetune_vs_full": result.shared_seconds / by["full"]["train_s"],
        "update_share_finetune_vs_full": by["finetune"]["update_s"] / by["full"]["train_s"],
        "update_time_ratio_finetune_vs_full": (
            by["finetune"]["update_s"] / by["full"]["update_s"]
            if by["full"]["update_s"] > 0
            else float("nan")
        ),
    }
    # Is (b) better than (c), or than (a)? Per-event NDCG differences, with one-sided 95% bounds
    # from a paired bootstrap that resamples users (a user's events are not independent).
    users = np.concatenate(result.users)
    per_event = {s: ndcg_per_user(np.concatenate(r), k) for s, r in result.ranks.items()}
    pairs = [("finetune", s) for s in ("frozen", "full") if s in per_event]
    pairs += [("gated", s) for s in ("frozen", "full") if "gated" in per_event and s in per_event]
    for mine, other in pairs:
        mean, low, high = paired_bootstrap(
            per_event[mine], per_event[other], BOOT, 0.95, seed=0, groups=users
        )
        ratios |= {
            f"ndcg_gain_{mine}_vs_{other}": mean,
            f"ndcg_gain_{mine}_vs_{other}_low": low,
            f"ndcg_gain_{mine}_vs_{other}_high": high,
        }
    if "gated" in result.ranks:
        tunes = [d for d in result.decisions if d["challenger"] == "fine-tune" and "policy" in d]
        ratios |= {
            "gated.finetunes": float(len(tunes)),
            "gated.finetunes_promoted": float(sum(d["promoted"] for d in tunes)),
            "gated.live_mean_age_h": float(np.concatenate(result.ages).mean()),
        }
    return rows, ratios


def print_gate(result: Replay, ratios: dict[str, float], k: int) -> None:
    """(e)'s decisions, and the three lines that scripts read."""
    print(f"\n{'day':<12}{'challenger':<11}{'decision':<10}reason")
    for d in result.decisions:
        word = "PROMOTED" if d["promoted"] else "rejected"
        print(f"{d['day']:<12}{d['challenger']:<11}{word:<10}{d['reason']}")
    ndcg = {s: ndcg_at_k(np.concatenate(r), k) for s, r in result.ranks.items()}
    for other, label in (("frozen", "(e)-(c)"), ("full", "(e)-(a)")):
        gain = f"ndcg_gain_gated_vs_{other}"
        if gain in ratios:
            low, high = ratios[f"{gain}_low"], ratios[f"{gain}_high"]
            verdict = "better" if low > 0 else "worse" if high < 0 else "not clearly different"
            print(f"{label} NDCG@{k} per event: {ratios[gain]:+.4f}, 95% bounds [{low:+.4f}, "
                  f"{high:+.4f}] (paired bootstrap over users): {verdict}")  # fmt: skip
    print(
        f"fine-tunes promoted: {int(ratios['gated.finetunes_promoted'])} of "
        f"{int(ratios['gated.finetunes'])}\n"
        f"live model mean age: {ratios['gated.live_mean_age_h']:.1f} h\n"
        f"live NDCG@{k}: gated {ndcg['gated']:.4f}, weekly only {ndcg['frozen']:.4f}, "
        f"daily full {ndcg.get('full', float('nan')):.4f}"
    )


def print_tables(
    summary: list[dict[str, Any]], ratios: dict[str, float], days: list[dict], k: int
) -> None:
    print(f"\n{'strategy':<26}{f'HR@{k}':>10}{f'NDCG@{k}':>10}{'train s':>10}{'update s':>10}")
    for row in summary:
        print(
            f"{row['strategy']:<26}{row[f'hr_at_{k}']:>10.4f}{row[f'ndcg_at_{k}']:>10.4f}"
            f"{row['train_s']:>10.1f}{row['update_s']:>10.1f}"
        )
    print(
        f"\n(b)/(a) NDCG@{k}: {ratios['ndcg_ratio_finetune_vs_full']:.3f}   "
        f"(b)/(c) NDCG@{k}: {ratios['ndcg_ratio_finetune_vs_frozen']:.3f}   "
        f"(b)/(a) train time: {ratios['time_ratio_finetune_vs_full']:.3f} in all "
        f"({ratios['retrain_share_finetune_vs_full']:.3f} the shared retrains + "
        f"{ratios['update_share_finetune_vs_full']:.3f} the daily updates); the updates against "
        f"(a)'s other retrains: {ratios['update_time_ratio_finetune_vs_full']:.3f}; "
        f"(b)/(a) training targets: {ratios['token_ratio_finetune_vs_full']:.3f}"
    )
    for other, label in (("frozen", "(b)-(c)"), ("full", "(b)-(a)")):
        gain = f"ndcg_gain_finetune_vs_{other}"
        if gain not in ratios:
            continue
        low, high = ratios[f"{gain}_low"], ratios[f"{gain}_high"]
        verdict = "better" if low > 0 else "worse" if high < 0 else "not clearly different"
        print(
            f"{label} NDCG@{k} per event: {ratios[gain]:+.4f}, 95% bounds [{low:+.4f}, "
            f"{high:+.4f}] (paired bootstrap over users): {verdict}"
        )
    names = {
        "full": "full",
        "finetune": "ft",
        "frozen": "frozen",
        "popular": "pop",
        "gated": "gated",
    }
    names = {s: n for s, n in names.items() if f"ndcg_{s}" in days[0]}
    head = "".join(f"{'ndcg ' + n:>12}" for n in names.values())
    head += "".join(f"{'hr ' + n:>10}" for n in names.values())
    head = f"{'day':<12}{'events':>7}{'new it':>7}{'active':>7}{head}"
    print(f"\n{head}{'full s':>8}{'ft s':>7}{'ft ep':>6}")
    for r in days:
        cells = "".join(f"{r['ndcg_' + s]:>12.4f}" for s in names)
        cells += "".join(f"{r['hr_' + s]:>10.4f}" for s in names)
        print(
            f"{r['day']:<12}{r['events']:>7}{r['new_items']:>7}{r['active_users']:>7}{cells}"
            f"{r['full_s']:>8.1f}{r['finetune_s']:>7.1f}{r['finetune_epochs']:>6}"
        )


def main() -> None:
    defaults_m, defaults_t, defaults_f = ModelConfig(), TrainConfig(), TrainConfig.finetune()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7, help="last UTC days to replay")
    parser.add_argument(
        "--end", type=dt.date.fromisoformat, help="last day replayed (default: the data's last)"
    )
    parser.add_argument(
        "--retrain-every", type=int, default=7, help="days between full retrains of (b) and (c)"
    )
    parser.add_argument(
        "--no-daily-full", action="store_true", help="leave out (a): only periodic retrains"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=defaults_t.seed)
    parser.add_argument(
        "--seeds", type=int, default=1, help="replay with --seed, --seed + 1, ...: mean and spread"
    )
    parser.add_argument("--max-len", type=int, default=defaults_m.max_len)
    parser.add_argument("--epochs", type=int, default=defaults_t.epochs, help="full retrain")
    parser.add_argument("--finetune-epochs", type=int, default=defaults_f.epochs)
    parser.add_argument(
        "--warm-shrink", type=float, default=defaults_f.warm_shrink,
        help="fine-tunes: scale the parent's weights by this first (1.0: as saved)",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench")
    parser.add_argument("--no-mlflow", action="store_true", help="print only, log nothing")
    parser.add_argument(
        "--gate", action="store_true",
        help="(e): every retrain and fine-tune goes through the promotion gate (promotion.toml)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse-retrains", action="store_true",
        help="keep full retrains under --cache and reuse them (deterministic on one machine)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.days < 1 or args.retrain_every < 1 or args.seeds < 1:
        parser.error("--days, --retrain-every and --seeds must be >= 1")
    if not 0.0 < args.warm_shrink <= 1.0:
        parser.error(f"--warm-shrink must be in (0, 1], got {args.warm_shrink}")

    model_cfg = dataclasses.replace(defaults_m, max_len=args.max_len)
    min_events = EvalConfig().min_events
    histories, first_seen = ml100k_histories(args.cache)
    end_day = None
    if args.end is not None:
        end_day = (args.end - dt.date(1970, 1, 1)).days
        try:
            replay_days(histories, args.days, end_day)
        except ValueError as err:
            parser.error(str(err))
    print(
        f"MovieLens-100K: {len(histories)} users, {len(first_seen)} items, "
        f"{sum(map(len, histories))} events; {args.days} UTC days up to "
        f"{args.end or 'the last'}, k={args.k}\n"
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu\n"
        f"model {model_cfg}",
        flush=True,
    )
    per_seed = {}
    for seed in range(args.seed, args.seed + args.seeds):
        full_cfg = dataclasses.replace(defaults_t, epochs=args.epochs, seed=seed)
        ft_cfg = dataclasses.replace(
            defaults_f, epochs=args.finetune_epochs, seed=seed, warm_shrink=args.warm_shrink
        )
        per_seed[seed] = run_seed(
            args, histories, first_seen, end_day, model_cfg, full_cfg, ft_cfg, min_events
        )
    if args.seeds > 1:
        print_seeds(per_seed, args.k)


def print_seeds(per_seed: dict[int, dict[str, float]], k: int) -> None:
    """The headline figures of each seed's replay, then their mean and standard deviation."""
    cols = {
        f"(a) NDCG@{k}": f"full.ndcg_at_{k}",
        f"(b) NDCG@{k}": f"finetune.ndcg_at_{k}",
        f"(c) NDCG@{k}": f"frozen.ndcg_at_{k}",
        "(b)/(a)": "ndcg_ratio_finetune_vs_full",
        "(b)/(c)": "ndcg_ratio_finetune_vs_frozen",
        "time (b)/(a)": "time_ratio_finetune_vs_full",
        "retrain share": "retrain_share_finetune_vs_full",
        "tokens (b)/(a)": "token_ratio_finetune_vs_full",
        "(b)-(c) low": "ndcg_gain_finetune_vs_frozen_low",
    }
    print(f"\n{'seed':<6}" + "".join(f"{c:>14}" for c in cols))
    table = np.array([[m.get(key, np.nan) for key in cols.values()] for m in per_seed.values()])
    for seed, row in zip(per_seed, table, strict=True):
        print(f"{seed:<6}" + "".join(f"{v:>14.4f}" for v in row))
    for name, stat in (("mean", np.mean), ("std", np.std)):
        print(f"{name:<6}" + "".join(f"{v:>14.4f}" for v in stat(table, axis=0)))
    better = int(np.sum(table[:, -1] > 0))
    print(f"(b) clearly better than (c) on {better} of {len(table)} seeds (lower bound above 0)")


def run_seed(args: argparse.Namespace, histories: list[list[tuple[int, int]]],
             first_seen: list[int], end_day: int | None, model_cfg: ModelConfig,
             full_cfg: TrainConfig, ft_cfg: TrainConfig,
             min_events: int) -> dict[str, float]:  # fmt: skip
    """Replay the window with one seed's configs, print its tables, log it; its metrics."""
    gate = None
    if args.gate:  # the replay judges quality: latency is bench/serve.py's, and on a shared
        # machine a p95 timed here is the other jobs' noise (it rejected 3 of 3 in one run)
        loaded = GateConfig.load(os.environ.get("RECSYS_PROMOTION_CONFIG"))
        gate = dataclasses.replace(loaded, latency_tolerance=float("inf"),
                                   latency_max_ms=float("inf"))  # fmt: skip
    print(f"\nfull {full_cfg}\nfinetune {ft_cfg}", flush=True)
    t0 = time.perf_counter()
    result = replay(
        histories, first_seen, args.days, model_cfg, full_cfg, ft_cfg, args.k, min_events,
        args.retrain_every, not args.no_daily_full, end_day, gate,
        RetrainCache(args.cache / "retrains" if args.reuse_retrains else None),
    )  # fmt: skip
    summary, ratios = summarise(result, args.k)
    print_tables(summary, ratios, result.rows, args.k)
    if gate is not None:
        print_gate(result, ratios, args.k)
    print(f"\nrepeat events dropped: {result.n_repeats}; wall {time.perf_counter() - t0:.0f}s")
    metrics = dict(ratios)
    for s, row in zip(result.ranks, summary, strict=True):
        metrics |= {f"{s}.{key}": v for key, v in row.items() if key != "strategy"}
    if args.no_mlflow:
        return metrics
    from common import log_benchmark

    params = {
        "days": args.days, "end": str(args.end or "last"), "k": args.k,
        "min_events": min_events,
        "retrain_every": args.retrain_every, "daily_full": not args.no_daily_full,
        "gate": args.gate,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu",
        **{f"model.{f}": v for f, v in dataclasses.asdict(model_cfg).items()},
        **{f"full.{f}": v for f, v in dataclasses.asdict(full_cfg).items()},
        **{f"finetune.{f}": v for f, v in dataclasses.asdict(ft_cfg).items()},
    }  # fmt: skip
    tables = {"summary": summary, "per_day": result.rows}
    if result.decisions:
        tables["gate_decisions"] = result.decisions
    run_id = log_benchmark("incremental", params, metrics, tables, result.curves)
    print(f"logged to MLflow experiment bench-incremental, run {run_id}")
    return metrics


if __name__ == "__main__":
    main()
