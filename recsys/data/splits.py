"""Splits: what a model trains on, is selected on and is judged on. Data, not metrics.

Items are integer indices ``1..n_items`` (0 is padding); a dataset is ``list[list[int]]``, one
time-ordered history per user. ``leave_last_out`` is the split of every retrain and of the
promotion gate; ``incremental_splits`` that of a fine-tune; ``next_interval_split`` that of the
day-by-day replay in ``bench/incremental.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Repeats = Literal["drop", "keep"]


@dataclass(frozen=True)
class Split:
    """A leave-last-out split.

    ``test_users[i]`` is the position, in the input list, of the user behind ``test_context[i]``,
    ``test_target[i]``, ``valid_context[i]`` and ``valid_target[i]``.
    """

    train: list[list[int]]
    valid_context: list[list[int]]
    valid_target: list[int]
    test_context: list[list[int]]
    test_target: list[int]
    test_users: list[int]


def leave_last_out(sequences: Sequence[Sequence[int]], min_events: int = 3) -> Split:
    """Hold out each user's last item for test and the one before it for validation.

    Users with at least ``min_events`` items: test target ``seq[-1]`` (context ``seq[:-1]``), valid
    target ``seq[-2]`` (context ``seq[:-2]``), train ``seq[:-2]``. Shorter users only contribute
    their whole sequence to ``train``, and only if it has at least two items (one transition).
    """
    if min_events < 3:
        raise ValueError(f"min_events must be >= 3 (train, valid and test), got {min_events}")
    train: list[list[int]] = []
    valid_context: list[list[int]] = []
    valid_target: list[int] = []
    test_context: list[list[int]] = []
    test_target: list[int] = []
    test_users: list[int] = []
    for user, seq in enumerate(sequences):
        seq = list(seq)
        if len(seq) < min_events:
            if len(seq) >= 2:
                train.append(seq)
            continue
        train.append(seq[:-2])
        valid_context.append(seq[:-2])
        valid_target.append(seq[-2])
        test_context.append(seq[:-1])
        test_target.append(seq[-1])
        test_users.append(user)
    return Split(train, valid_context, valid_target, test_context, test_target, test_users)


@dataclass(frozen=True)
class NextIntervalSplit:
    """Training sequences before a time window and one next-item case per event inside it.

    ``train[u]`` holds user ``u``'s items strictly before the window: one entry per input user,
    empty for users with no earlier event, so positions line up with the input. Case ``i`` asks
    for item ``targets[i]`` of user ``users[i]`` given ``contexts[i]``, everything that user did
    before that event (before the window and earlier inside it). Cases are ordered by user, then
    time. ``n_repeats`` counts window events whose item was already in their context, whether
    they were dropped or kept.
    """

    train: list[list[int]]
    contexts: list[list[int]]
    targets: list[int]
    users: list[int]
    n_repeats: int


def next_interval_split(
    histories: Sequence[Sequence[tuple[int, float]]],
    start: float,
    end: float,
    repeats: Repeats = "drop",
) -> NextIntervalSplit:
    """Split time-ordered ``(item, timestamp)`` histories at the window ``[start, end)``.

    Events before ``start`` become training sequences; every event in ``[start, end)`` becomes
    one evaluation case whose context is the user's whole history before it, so later events of
    a day are predicted knowing the earlier ones. Events at or after ``end`` are ignored. Events
    with equal timestamps keep their input order. ``start == end`` is an empty window.

    ``repeats`` decides what happens to an event whose item the user has already seen:
    ``rank_targets`` never filters the target itself, so such a case can still be hit offline,
    although ``top_k`` (what is served) never recommends a seen item. ``"drop"`` (the default)
    removes those cases, so the metrics measure what serving can deliver: the next *new* item;
    ``"keep"`` evaluates them anyway. Either way they are counted in ``n_repeats``.
    MovieLens has no repeats (one rating per user and item), so there the choice changes nothing.
    """
    if end < start:
        raise ValueError(f"window end {end} is before its start {start}")
    if repeats not in ("drop", "keep"):
        raise ValueError(f"repeats must be 'drop' or 'keep', got {repeats!r}")
    train: list[list[int]] = []
    contexts: list[list[int]] = []
    targets: list[int] = []
    users: list[int] = []
    n_repeats = 0
    for user, history in enumerate(histories):
        items = [int(item) for item, _ in history]
        times = [float(t) for _, t in history]
        if any(later < earlier for earlier, later in zip(times, times[1:], strict=False)):
            raise ValueError(f"history of user {user} is not ordered by time")
        if any(item < 1 for item in items):
            raise ValueError(f"history of user {user} has item indices below 1 (0 is padding)")
        lo, hi = bisect_left(times, start), bisect_left(times, end)  # window is items[lo:hi]
        train.append(items[:lo])
        seen = set(items[:lo])
        for pos in range(lo, hi):
            item = items[pos]
            if item in seen:
                n_repeats += 1
                if repeats == "drop":
                    continue
            seen.add(item)
            contexts.append(items[:pos])
            targets.append(item)
            users.append(user)
    return NextIntervalSplit(train, contexts, targets, users, n_repeats)


def mix_replay(
    new: Sequence[Sequence[int]], old: Sequence[Sequence[int]], ratio: float, seed: int
) -> list[list[int]]:
    """``new`` followed by a seeded sample of ``round(ratio * len(new))`` sequences of ``old``.

    The replay sample that keeps an incremental fine-tune from forgetting: drawn without
    replacement and capped at ``len(old)``; the same inputs and seed give the same list.
    """
    if ratio < 0:
        raise ValueError(f"replay ratio must be >= 0, got {ratio}")
    n_old = min(len(old), round(ratio * len(new)))
    picks = np.random.default_rng(seed).choice(len(old), size=n_old, replace=False)
    return [list(s) for s in new] + [list(old[int(i)]) for i in np.sort(picks)]


def in_old_slice(user_id: str, share: float) -> bool:
    """Whether a user belongs to the fixed old-data slice: a stable hash of the id, so the
    same users are in it on every run, whatever else the snapshot holds."""
    bucket = int(hashlib.blake2b(user_id.encode(), digest_size=4).hexdigest(), 16) % 10_000
    return bucket < share * 10_000


@dataclass(frozen=True)
class IncrementalSplits:
    """What an incremental fine-tune trains on and is judged on."""

    train: Split  # new users' train parts + replayed old train parts; new users' validation
    new: Split  # users active since the parent's data: the new data
    old: Split  # a fixed slice of the other users: what the parent knew and must not forget


def incremental_splits(
    users: Sequence[str],
    sequences: Sequence[Sequence[int]],
    active: set[str],
    replay_ratio: float,
    seed: int,
    min_events: int = 3,
    old_share: float = 0.2,
) -> IncrementalSplits:
    """Split a snapshot for a fine-tune: ``active`` users are new data; the others are old.

    Training replays ``replay_ratio`` old train parts per new one (never a held-out item);
    ``old`` holds the leave-last-out test of a fixed, hash-chosen ``old_share`` of old users.
    """
    new = [seq for user, seq in zip(users, sequences, strict=True) if user in active]
    old = [(user, seq) for user, seq in zip(users, sequences, strict=True) if user not in active]
    new_split = leave_last_out(new, min_events)
    old_split = leave_last_out([seq for _, seq in old], min_events)
    old_slice = leave_last_out([seq for u, seq in old if in_old_slice(u, old_share)], min_events)
    mixed = mix_replay(new_split.train, old_split.train, replay_ratio, seed)
    return IncrementalSplits(dataclasses.replace(new_split, train=mixed), new_split, old_slice)
