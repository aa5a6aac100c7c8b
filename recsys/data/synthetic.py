"""A synthetic event stream with known sequential structure and known defects, for tests and demos.

Each user walks a ring of items (next item = current + 1..3) with some random jumps, so the next
item is predictable from the last ones (a sequence model wins) but not from popularity. The
catalogue grows over time (new items become available every day), as in a real shop.

Optional, all off by default (``generate()`` then returns exactly what it always has):

- ``drift``: per event, the probability that the user's taste jumps to a far region of the ring
  (between a quarter and three quarters of the catalogue away), where the walk continues;
- ``bursts``: on some days a few items get ``burst_share`` of that day's events (an impulse: the
  user's walk is not moved by it);
- ``bad_row_rate``: the share of returned rows that are extra, malformed rows of ``BAD_KINDS``.

The extras draw from their own random streams, so event times, users and (without drift or
bursts) items are the same as without them. ``generate_with_truth`` also returns the ground truth.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from recsys import schema as S

NULL_USER = "null_user"
NULL_ITEM = "null_item"
BAD_TIME = "bad_time"
UNKNOWN_TYPE = "unknown_type"
DUPLICATE_ID = "duplicate_id"
BAD_KINDS = (NULL_USER, NULL_ITEM, BAD_TIME, UNKNOWN_TYPE, DUPLICATE_ID)
BAD_TIMES = ("not-a-time", "2024-02-30T10:00:00", "31/12/2024 10:00")
UNKNOWN_EVENT_TYPE = "teleport"

_STEPS = (1, 1, 2, 3)
_DAY = 86_400


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that shapes a synthetic stream; the defaults are those of ``generate()``.

    ``bursts`` is a number of burst days (picked from the seed) or the day indices (0-based, whole
    days since ``start``) that get one. ``bad_row_rate`` is at most 0.5.
    """

    n_users: int = 200
    n_items: int = 120
    events_per_user: tuple[int, int] = (12, 30)
    start: dt.datetime = dt.datetime(2024, 1, 1)
    days: int = 6
    new_items_share: float = 0.2
    noise: float = 0.1
    seed: int = 0
    drift: float = 0.0
    bursts: int | Sequence[int] = ()
    burst_size: int = 3
    burst_share: float = 0.5
    bad_row_rate: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.bursts, int):
            object.__setattr__(self, "bursts", tuple(self.bursts))
        if not 0.0 <= self.drift <= 1.0:
            raise ValueError(f"drift must be in [0, 1], got {self.drift}")
        if not 0.0 <= self.bad_row_rate <= 0.5:
            raise ValueError(f"bad_row_rate must be in [0, 0.5], got {self.bad_row_rate}")
        if not 0.0 < self.burst_share <= 1.0:
            raise ValueError(f"burst_share must be in (0, 1], got {self.burst_share}")
        if self.burst_size < 1:
            raise ValueError(f"burst_size must be at least 1, got {self.burst_size}")
        if isinstance(self.bursts, int):
            if not 0 <= self.bursts <= self.days:
                raise ValueError(f"bursts must be between 0 and days={self.days}")
        elif any(not 0 <= d < self.days for d in self.bursts):
            raise ValueError(f"burst days must be in [0, {self.days}), got {self.bursts}")


@dataclass(frozen=True)
class SyntheticData:
    """A synthetic stream (``records``, sorted by ``ingested_at`` then ``event_id``) and its truth.

    ``bad_event_ids`` maps each kind of ``BAD_KINDS`` to the ids of its rows; every bad row's id
    starts with ``bad-<kind>-`` except ``duplicate_id`` rows, which repeat the id of a good row and
    are the *later* of the two (same event, ``ingested_at`` 1 s to 1 h after the original).
    """

    records: list[dict[str, Any]]
    config: SyntheticConfig
    catalogue: tuple[int, ...]  # items available on day d: i0 .. i{catalogue[d] - 1}
    drift_event_ids: frozenset[str]  # events at which the user's taste jumped
    burst_items: dict[int, tuple[str, ...]]  # day since start -> items bursting that day
    bad_event_ids: dict[str, tuple[str, ...]]


def generate(
    n_users: int = 200,
    n_items: int = 120,
    events_per_user: tuple[int, int] = (12, 30),
    start: dt.datetime = dt.datetime(2024, 1, 1),
    days: int = 6,
    new_items_share: float = 0.2,
    noise: float = 0.1,
    seed: int = 0,
    *,
    drift: float = 0.0,
    bursts: int | Sequence[int] = (),
    burst_size: int = 3,
    burst_share: float = 0.5,
    bad_row_rate: float = 0.0,
) -> list[dict[str, Any]]:
    """Event records in the documented schema, ``ingested_at == event_time``, sorted by time.

    ``new_items_share`` of the catalogue is released gradually over ``days``: day ``d`` sees the
    first ``base + d * per_day`` items. The keyword-only options are described in the module
    docstring and ``SyntheticConfig``; ``generate_with_truth`` returns the ground truth as well.
    """
    cfg = SyntheticConfig(
        n_users=n_users,
        n_items=n_items,
        events_per_user=events_per_user,
        start=start,
        days=days,
        new_items_share=new_items_share,
        noise=noise,
        seed=seed,
        drift=drift,
        bursts=bursts,
        burst_size=burst_size,
        burst_share=burst_share,
        bad_row_rate=bad_row_rate,
    )
    return simulate(cfg).records


def generate_with_truth(**options: Any) -> SyntheticData:
    """``generate``'s records plus the ground truth; takes the same keyword arguments."""
    return simulate(SyntheticConfig(**options))


def simulate(cfg: SyntheticConfig) -> SyntheticData:
    """Generate the stream described by ``cfg`` and the truth behind it (pure, seeded)."""
    base = max(2, round(cfg.n_items * (1 - cfg.new_items_share)))
    per_day = (cfg.n_items - base) / max(cfg.days - 1, 1)
    catalogue = tuple(min(cfg.n_items, base + int(d * per_day)) for d in range(cfg.days))
    burst_rng = random.Random(f"bursts-{cfg.seed}")
    burst_items = _pick_bursts(cfg, catalogue, burst_rng)
    records, drifted = _walk(cfg, base, per_day, burst_items, burst_rng)
    bad_rows, bad_ids = _bad_rows(records, cfg)
    records.extend(bad_rows)
    records.sort(key=itemgetter(S.INGESTED_AT, S.EVENT_ID))
    return SyntheticData(
        records=records,
        config=cfg,
        catalogue=catalogue,
        drift_event_ids=frozenset(drifted),
        burst_items=burst_items,
        bad_event_ids=bad_ids,
    )


def _pick_bursts(
    cfg: SyntheticConfig, catalogue: tuple[int, ...], rng: random.Random
) -> dict[int, tuple[str, ...]]:
    """Burst day -> ``burst_size`` distinct items available that day."""
    if isinstance(cfg.bursts, int):
        days = sorted(rng.sample(range(cfg.days), cfg.bursts))
    else:
        days = sorted(set(cfg.bursts))
    picked = {}
    for day in days:
        if cfg.burst_size > catalogue[day]:
            raise ValueError(f"burst_size {cfg.burst_size} > {catalogue[day]} items on day {day}")
        picked[day] = tuple(f"i{i}" for i in rng.sample(range(catalogue[day]), cfg.burst_size))
    return picked


def _walk(
    cfg: SyntheticConfig,
    base: int,
    per_day: float,
    burst_items: dict[int, tuple[str, ...]],
    burst_rng: random.Random,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The users' ring walks (unsorted records) and the ids of the events where taste drifted.

    The main random stream is consumed exactly as by the original generator, whatever the
    options, so the defaults reproduce its records bit for bit.
    """
    rng = random.Random(cfg.seed)
    drift_rng = random.Random(f"drift-{cfg.seed}")
    rand, randrange, choice = rng.random, rng.randrange, rng.choice
    start, n_items, noise, drift, seed = cfg.start, cfg.n_items, cfg.noise, cfg.drift, cfg.seed
    span = cfg.days * _DAY
    records: list[dict[str, Any]] = []
    drifted: list[str] = []
    for u in range(cfg.n_users):
        n = rng.randint(*cfg.events_per_user)
        offsets = sorted(rng.uniform(0, span) for _ in range(n))
        current = randrange(base)
        user = f"u{u}"
        for j, off in enumerate(offsets):
            when = start + dt.timedelta(seconds=round(off, 3))
            day = (when - start).days
            available = min(n_items, base + int(day * per_day))
            if rand() < noise:
                current = randrange(available)
            else:
                current = (current + choice(_STEPS)) % available
            event_id = f"syn-{seed}-{u}-{j}"
            if drift and drift_rng.random() < drift:
                lo = max(1, available // 4)
                current = (current + drift_rng.randint(lo, max(lo, 3 * available // 4))) % available
                drifted.append(event_id)
            item = f"i{current}"
            if day in burst_items and burst_rng.random() < cfg.burst_share:
                item = burst_rng.choice(burst_items[day])
            iso = when.isoformat()
            records.append(
                {
                    S.EVENT_ID: event_id,
                    S.USER_ID: user,
                    S.ITEM_ID: item,
                    S.EVENT_TYPE: "view",
                    S.EVENT_TIME: iso,
                    S.INGESTED_AT: iso,
                    S.VALUE: None,
                }
            )
    return records, drifted


def _bad_rows(
    good: list[dict[str, Any]], cfg: SyntheticConfig
) -> tuple[list[dict[str, Any]], dict[str, tuple[str, ...]]]:
    """Malformed copies of distinct good rows, ``BAD_KINDS`` in turn, and their ids by kind.

    Their number makes them ``bad_row_rate`` of all rows returned.
    """
    ids: dict[str, list[str]] = {kind: [] for kind in BAD_KINDS}
    if not cfg.bad_row_rate or not good:
        return [], {kind: () for kind in BAD_KINDS}
    rng = random.Random(f"bad-{cfg.seed}")
    n_bad = min(len(good), round(len(good) * cfg.bad_row_rate / (1 - cfg.bad_row_rate)))
    rows = []
    for k, src in enumerate(rng.sample(range(len(good)), n_bad)):
        kind = BAD_KINDS[k % len(BAD_KINDS)]
        row = dict(good[src])
        if kind == DUPLICATE_ID:  # the same event delivered again, later
            later = dt.datetime.fromisoformat(row[S.INGESTED_AT])
            row[S.INGESTED_AT] = (later + dt.timedelta(seconds=rng.randint(1, 3600))).isoformat()
        else:
            row[S.EVENT_ID] = f"bad-{kind}-{cfg.seed}-{k}"
        if kind == NULL_USER:
            row[S.USER_ID] = None
        elif kind == NULL_ITEM:
            row[S.ITEM_ID] = None
        elif kind == BAD_TIME:
            row[S.EVENT_TIME] = BAD_TIMES[k % len(BAD_TIMES)]
        elif kind == UNKNOWN_TYPE:
            row[S.EVENT_TYPE] = UNKNOWN_EVENT_TYPE
        ids[kind].append(row[S.EVENT_ID])
        rows.append(row)
    return rows, {kind: tuple(v) for kind, v in ids.items()}
