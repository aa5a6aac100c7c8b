"""A small synthetic event stream with known sequential structure, for tests and quick demos.

Each user walks a ring of items (next item = current + 1..3) with some random jumps, so the next
item is predictable from the last ones (a sequence model wins) but not from popularity. The
catalogue grows over time (new items become available every day), as in a real shop.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from recsys import schema as S


def generate(
    n_users: int = 200,
    n_items: int = 120,
    events_per_user: tuple[int, int] = (12, 30),
    start: dt.datetime = dt.datetime(2024, 1, 1),
    days: int = 6,
    new_items_share: float = 0.2,
    noise: float = 0.1,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Event records in the documented schema, ``ingested_at == event_time``, sorted by time.

    ``new_items_share`` of the catalogue is released gradually over ``days``: day ``d`` sees the
    first ``base + d * per_day`` items.
    """
    rng = random.Random(seed)
    base = max(2, round(n_items * (1 - new_items_share)))
    per_day = (n_items - base) / max(days - 1, 1)
    span = days * 86_400
    records = []
    for u in range(n_users):
        n = rng.randint(*events_per_user)
        offsets = sorted(rng.uniform(0, span) for _ in range(n))
        current = rng.randrange(base)
        for j, off in enumerate(offsets):
            when = start + dt.timedelta(seconds=round(off, 3))
            available = min(n_items, base + int((when - start).days * per_day))
            if rng.random() < noise:
                current = rng.randrange(available)
            else:
                current = (current + rng.choice((1, 1, 2, 3))) % available
            records.append(
                {
                    S.EVENT_ID: f"syn-{seed}-{u}-{j}",
                    S.USER_ID: f"u{u}",
                    S.ITEM_ID: f"i{current}",
                    S.EVENT_TYPE: "view",
                    S.EVENT_TIME: when.isoformat(),
                    S.INGESTED_AT: when.isoformat(),
                    S.VALUE: None,
                }
            )
    records.sort(key=lambda r: (r[S.INGESTED_AT], r[S.EVENT_ID]))
    return records
