"""Automatic rollback: if the live champion's online click-through rate drops clearly below its
predecessor's, move ``champion`` back and say why.

The CTR of each version comes from the feedback loop (``recsys.data.impressions.ctr_by_version``):
lists served by serving, joined with the clicks that name their request id. The live version is
judged on everything it served since it became champion, the predecessor on its last period as
champion (at most ``baseline_hours``). Thresholds live in the ``[online]`` table of
``promotion.toml``.

The guard looks again every ``look_hours`` (the DAG runs hourly), and a test repeated at 5% would
roll back a version no worse than its predecessor far more often than 5% of the time. So the
``alpha`` is spent over the looks: look ``k`` (counted from the promotion) tests at
``alpha_k = alpha * 6 / (pi^2 k^2)``, which sum to ``alpha`` over every look there will ever be
(a union bound: valid however the looks depend on each other). A rollback also needs the drop to
exceed ``max_relative_drop``, and ``min_impressions`` per version.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from recsys.config import CHAMPION, Settings
from recsys.release import notify
from recsys.release.policy_file import load_table, spent_alpha

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineGuardConfig:
    alpha: float = 0.05  # false rollbacks of a version no worse, over all its looks together
    look_hours: float = 1.0  # how often the guard looks (its DAG's schedule)
    min_impressions: int = 200  # per version: below this, no verdict
    max_relative_drop: float = 0.10  # and roll back only when CTR fell by more than this share
    baseline_hours: float = 168.0  # the predecessor is judged on at most its last week as champion

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0 or self.look_hours <= 0:
            raise ValueError(f"need 0 < alpha < 1 and look_hours > 0: {self}")

    def alpha_at(self, look: int) -> float:
        """The share of ``alpha`` spent at look ``look`` (1, 2, ...)."""
        return spent_alpha(self.alpha, look)

    @classmethod
    def load(cls, path: str | Path | None = None) -> OnlineGuardConfig:
        hint = "; z and window_hours became alpha (spent over the looks)"
        return load_table(cls, "online", path, "online-guard", hint)


def ctr_dropped(
    live: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    cfg: OnlineGuardConfig,
    look: int = 1,
) -> tuple[bool, str]:
    """(roll back?, why) at look ``look`` from two ``VersionCtr.as_dict()`` records (None:
    nothing served): the live version's, cumulated since its promotion, and its predecessor's."""
    if not live or not previous:
        return False, "no impressions of the live version or of its predecessor in the window"
    n1, c1, n0, c0 = (
        live["impressions"],
        live["clicked"],
        previous["impressions"],
        previous["clicked"],
    )
    if min(n0, n1) < cfg.min_impressions:
        return (
            False,
            f"too few impressions to judge ({n1} live, {n0} before; need {cfg.min_impressions})",
        )
    p1, p0 = c1 / n1, c0 / n0
    if p0 == 0:
        return False, "the predecessor had no clicks: nothing to drop from"
    pooled = (c0 + c1) / (n0 + n1)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    z = (p0 - p1) / se if se > 0 else 0.0
    drop = 1 - p1 / p0
    limit = NormalDist().inv_cdf(1 - cfg.alpha_at(look))  # one-sided, at this look's alpha
    what = (
        f"CTR of v{live['model_version']} {p1:.4f} ({c1}/{n1}) vs v{previous['model_version']} "
        f"{p0:.4f} ({c0}/{n0}): {drop:+.1%} drop, z={z:.2f} at look {look} "
        f"(limits: drop > {cfg.max_relative_drop:.0%} and z > {limit:.2f})"
    )
    return drop > cfg.max_relative_drop and z > limit, what


def _naive(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.UTC).replace(tzinfo=None) if ts.tzinfo else ts


def check(
    settings: Settings, now: dt.datetime | None = None, cfg: OnlineGuardConfig | None = None
) -> dict[str, Any]:
    """Compare the live champion's CTR with its predecessor's; roll back on a clear drop."""
    from recsys.data.impressions import ctr_by_version
    from recsys.registry import aliases
    from recsys.registry.alias_log import AliasLog, actor
    from recsys.registry.client import Registry

    cfg = cfg or OnlineGuardConfig.load()
    now = _naive(now or dt.datetime.now(dt.UTC))
    reg = Registry(settings)
    alias_log = AliasLog(settings.event_store_url)
    aliases.reconcile(reg, alias_log, CHAMPION)
    chain = alias_log.chain(CHAMPION)
    if len(chain) < 2 or chain[-2] is None or chain[-1] is None:
        return {"rolled_back": False, "reason": "no earlier champion to compare with"}
    live, previous = chain[-1], chain[-2]
    baseline = dt.timedelta(hours=cfg.baseline_hours)
    head = alias_log.head(CHAMPION)
    assert head is not None
    live_since = _naive(head.moved_at)
    earlier = [m for m in alias_log.history(CHAMPION)
               if m.to_version == previous and not m.pending and m.id < head.id]  # fmt: skip
    prev_start = _naive(earlier[-1].moved_at) if earlier else live_since - baseline
    prev_start = max(prev_start, live_since - baseline)
    live_ctr = ctr_by_version(settings.event_store_url, live_since, now)  # since its promotion
    prev_ctr = ctr_by_version(settings.event_store_url, prev_start, live_since)
    look = max(1, math.ceil((now - live_since) / dt.timedelta(hours=cfg.look_hours)))
    roll, why = ctr_dropped(live_ctr.get(live), prev_ctr.get(previous), cfg, look)
    result: dict[str, Any] = {
        "live": live,
        "previous": previous,
        "reason": why,
        "live_ctr": live_ctr.get(live),
        "previous_ctr": prev_ctr.get(previous),
    }
    if not roll:
        log.info("online guard: keeping v%s: %s", live, why)
        return {**result, "rolled_back": False}
    move = aliases.rollback(reg, alias_log, actor(), f"automatic rollback: {why}")
    log.warning(
        "online guard: rolled champion back from v%s to v%s: %s", live, move.to_version, why
    )
    notify.send(notify.Notice(
        "rollback", f"{CHAMPION} rolled back from v{live} to v{move.to_version}", why,
        {"who": move.actor, "recorded move": str(move.id)},
    ))  # fmt: skip
    return {**result, "rolled_back": True, "champion": move.to_version}
