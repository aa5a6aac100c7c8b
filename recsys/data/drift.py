"""Statistical checks of a partition against the partitions before it (pure functions).

Great Expectations checks each partition on its own; these compare it with history: volume within
a band of the recent median, the share of events from never-seen users and items, and the shift of
the event-type mix (total variation distance). Thresholds and actions live in ``DriftPolicy``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from recsys import schema as S
from recsys.config import DriftCheck, DriftPolicy

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Finding:
    check: str
    value: float
    threshold: DriftCheck
    breached: bool

    @property
    def quarantines(self) -> bool:
        return self.breached and self.threshold.action == "quarantine"

    def describe(self) -> str:
        t = self.threshold
        band = f"[{'-inf' if t.low is None else t.low}, {'inf' if t.high is None else t.high}]"
        verdict = f"BREACH ({t.action})" if self.breached else "ok"
        return f"{self.check}={self.value:.3f} allowed {band}: {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "quarantines": self.quarantines, "message": self.describe()}


def type_mix(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Half the L1 distance between two distributions: 0 identical, 1 disjoint."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def stats(frame: pd.DataFrame) -> dict[str, Any]:
    """What later partitions are compared against (stored in the partition's manifest)."""
    types = frame[S.EVENT_TYPE].fillna("<null>").value_counts()
    return {"rows": len(frame), "event_types": {str(k): int(v) for k, v in types.items()}}


def _finding(name: str, value: float, check: DriftCheck) -> Finding:
    breached = (check.low is not None and value < check.low) or (
        check.high is not None and value > check.high
    )
    return Finding(name, float(value), check, bool(breached))


def check(
    frame: pd.DataFrame,
    history: list[dict[str, Any]],
    seen_users: set[str],
    seen_items: set[str],
    policy: DriftPolicy,
) -> list[Finding]:
    """Findings for ``frame`` given the stats of earlier partitions (oldest first) and the users
    and items seen before it. Empty when there is too little history to compare with."""
    if len(history) < policy.min_history or frame.empty:
        return []
    recent = history[-policy.window :]
    median_rows = statistics.median(h["rows"] for h in recent) or 1
    pooled: dict[str, int] = {}
    for h in recent:
        for k, v in h["event_types"].items():
            pooled[k] = pooled.get(k, 0) + v
    now = stats(frame)
    return [
        _finding("row_ratio", now["rows"] / median_rows, policy.row_ratio),
        _finding(
            "new_user_share",
            float((~frame[S.USER_ID].isin(seen_users)).mean()),
            policy.new_user_share,
        ),
        _finding(
            "new_item_share",
            float((~frame[S.ITEM_ID].isin(seen_items)).mean()),
            policy.new_item_share,
        ),
        _finding(
            "event_type_shift",
            total_variation(type_mix(now["event_types"]), type_mix(pooled)),
            policy.event_type_shift,
        ),
    ]
