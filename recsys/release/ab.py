"""A/B tests: a share of the users served by the ``candidate`` alias, read out sequentially.

Serving assigns each user with an id to an arm by a hash of the id salted with the candidate's
version (``arm_of``): the same user stays in the same arm for the whole test, and the next test
shuffles them anew. Anonymous sessions stay on ``champion`` and out of the test. Every answer and
impression carries its arm.

The readout (``readout``) is the click-through rate per arm (lists with an attributed click, as
``recsys.data.impressions``; cold-start lists left out, as they are the same in both arms) with
95% intervals, and a decision. The decision is taken at *looks*: look ``k`` uses the first
``k * look_impressions`` impressions of each arm, so asking again gives the same answer until the
next look's data is in. Look ``k`` tests the CTR difference at ``alpha * 6 / (pi^2 k^2)``
(two-sided), the spending of ``recsys.release.online_guard``: however many looks a test takes,
an equal candidate is declared different at most ``alpha`` of the time.
Settings: the ``[ab]`` table of ``promotion.toml``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from recsys.config import CHAMPION, Settings
from recsys.release.policy_file import load_table, spent_alpha

CANDIDATE = "candidate"
ARMS = (CHAMPION, CANDIDATE)
WIN, LOSE, CONTINUE = "candidate wins", "candidate loses", "continue"


@dataclass(frozen=True)
class ABConfig:
    share: float = 0.5  # of the users with an id, the share the candidate serves
    alpha: float = 0.05  # declaring an equal candidate different, over all looks together
    look_impressions: int = 500  # a look per this many impressions in each arm
    require_win: bool = False  # a challenger that passes the gate becomes candidate, not champion

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0 or not 0.0 < self.alpha < 1.0 or self.look_impressions < 1:
            raise ValueError(f"need 0 < share < 1, 0 < alpha < 1, look_impressions >= 1: {self}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> ABConfig:
        return load_table(cls, "ab", path)

    def alpha_at(self, look: int) -> float:
        return spent_alpha(self.alpha, look)


def bucket(user_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the user id and the salt."""
    digest = hashlib.blake2b(f"{salt}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def arm_of(user_id: str | None, share: float, salt: str) -> str | None:
    """The user's arm (None: anonymous, served by champion and left out of the test)."""
    if user_id is None:
        return None
    return CANDIDATE if bucket(user_id, salt) < share else CHAMPION


@dataclass(frozen=True)
class Arm:
    name: str
    impressions: int
    clicked: int  # lists with at least one attributed click

    @property
    def ctr(self) -> float:
        return self.clicked / self.impressions if self.impressions else 0.0

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Wilson score interval of the CTR."""
        n = self.impressions
        if n == 0:
            return 0.0, 1.0
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        p = self.ctr
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(centre - half, 0.0), min(centre + half, 1.0)


@dataclass(frozen=True)
class Readout:
    arms: dict[str, Arm]  # everything served so far
    look: int  # completed looks; the decision uses the first look * look_impressions per arm
    diff: float | None  # candidate CTR - champion CTR at that look
    low: float | None  # and its interval at that look's spent alpha (two-sided)
    high: float | None
    alpha_spent: float | None
    decision: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        arms = {}
        for name, arm in self.arms.items():
            low, high = arm.interval()
            arms[name] = {"impressions": arm.impressions, "clicked": arm.clicked,
                          "ctr": arm.ctr, "ctr_low": low, "ctr_high": high}  # fmt: skip
        return {
            "arms": arms,
            "look": self.look,
            "ctr_diff": self.diff,
            "ctr_diff_low": self.low,
            "ctr_diff_high": self.high,
            "alpha_at_look": self.alpha_spent,
            "decision": self.decision,
            "reason": self.reason,
        }


def _count(clicked_flags: Sequence[bool]) -> int:
    return sum(1 for f in clicked_flags if f)


def readout(outcomes: dict[str, Sequence[bool]], cfg: ABConfig) -> Readout:
    """The decision on each arm's lists in serving order (True: the list got a click)."""
    arms = {name: Arm(name, len(outcomes.get(name, ())), _count(outcomes.get(name, ())))
            for name in ARMS}  # fmt: skip
    look = min(a.impressions for a in arms.values()) // cfg.look_impressions
    if look == 0:
        fewest = min(a.impressions for a in arms.values())
        reason = f"first look at {cfg.look_impressions} impressions per arm (fewest: {fewest})"
        return Readout(arms, 0, None, None, None, None, CONTINUE, reason)
    n = look * cfg.look_impressions
    at = {name: Arm(name, n, _count(outcomes[name][:n])) for name in ARMS}
    p1, p0 = at[CANDIDATE].ctr, at[CHAMPION].ctr
    diff = p1 - p0
    alpha = cfg.alpha_at(look)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    pooled = (at[CANDIDATE].clicked + at[CHAMPION].clicked) / (2 * n)
    se_test = math.sqrt(2 * pooled * (1 - pooled) / n)  # under "no difference"
    se = math.sqrt((p1 * (1 - p1) + p0 * (1 - p0)) / n)
    low, high = diff - z * se, diff + z * se
    stat = diff / se_test if se_test > 0 else 0.0
    words = f"look {look} ({n} impressions per arm), z = {stat:+.2f} against {z:.2f}"
    if stat > z:
        decision = WIN
    elif stat < -z:
        decision = LOSE
    else:
        decision = CONTINUE
    return Readout(arms, look, diff, low, high, alpha, decision, words)


# -- I/O ---------------------------------------------------------------------------------------


def outcomes_since(store_url: str, start: dt.datetime, end: dt.datetime) -> dict[str, list[bool]]:
    """Each arm's non-cold lists served in ``[start, end)``, in serving order: clicked or not."""
    from recsys.data import impressions as I

    engine = I.open_engine(store_url)
    try:
        shown = [imp for imp in I.read(engine, start, end) if imp.arm and not imp.cold_start]
        clicks = I.read_clicks(engine, start - I.CLOCK_SKEW, end + I.ATTRIBUTION)
    finally:
        engine.dispose()
    hit = {imp.request_id for imp, _ in I.attribute(shown, clicks)}
    out: dict[str, list[bool]] = {name: [] for name in ARMS}
    for imp in shown:  # ordered by served_at
        if imp.arm in out:
            out[imp.arm].append(imp.request_id in hit)
    return out


def status(settings: Settings, cfg: ABConfig | None = None) -> dict[str, Any]:
    """The running test: its versions, when it started, the readout."""
    from recsys.registry.alias_log import AliasLog
    from recsys.registry.client import Registry

    cfg = cfg or ABConfig.load()
    reg = Registry(settings)
    candidate, champion = reg.alias(CANDIDATE), reg.alias(CHAMPION)
    if candidate is None:
        return {
            "running": False,
            "reason": "no candidate: start one with `recsys ab start VERSION`",
        }
    head = AliasLog(settings.event_store_url).head(CANDIDATE)
    started = head.moved_at if head is not None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    now = dt.datetime.now(dt.UTC)
    result = readout(outcomes_since(settings.event_store_url, started, now), cfg)
    return {
        "running": True,
        "candidate": str(candidate.version),
        "champion": str(champion.version) if champion else None,
        "started_at": started.isoformat(),
        "share": cfg.share,
        "require_win": cfg.require_win,
        **result.as_dict(),
    }


def format_status(state: dict[str, Any]) -> list[str]:
    if not state["running"]:
        return [state["reason"]]
    lines = [
        f"A/B test: candidate v{state['candidate']} against champion v{state['champion']}, "
        f"{state['share']:.0%} of the users, since {state['started_at']}",
        f"{'arm':<10}{'impressions':>12}{'clicked':>9}{'CTR':>8}  95% interval",
    ]
    for name, arm in state["arms"].items():
        lines.append(
            f"{name:<10}{arm['impressions']:>12}{arm['clicked']:>9}{arm['ctr']:>8.4f}  "
            f"[{arm['ctr_low']:.4f}, {arm['ctr_high']:.4f}]"
        )
    if state["ctr_diff"] is not None:
        lines.append(
            f"CTR difference (candidate - champion): {state['ctr_diff']:+.4f}, interval "
            f"[{state['ctr_diff_low']:+.4f}, {state['ctr_diff_high']:+.4f}] at look "
            f"{state['look']}'s alpha {state['alpha_at_look']:.4f}"
        )
    lines.append(f"decision: {state['decision']} ({state['reason']})")
    return lines


def start(settings: Settings, version: str, reason: str, expected: Any = ...) -> Any:
    """Point ``candidate`` at ``version``, recorded, compare-and-set on ``expected`` (the version
    decided against; None: no candidate; default: whatever the alias log holds)."""
    from recsys.registry import aliases
    from recsys.registry.alias_log import FORCE, AliasLog, actor
    from recsys.registry.client import Registry

    reg, log = Registry(settings), AliasLog(settings.event_store_url)
    champion = reg.alias(CHAMPION)
    if champion is not None and str(champion.version) == str(version):
        raise ValueError(f"version {version} is the champion: an A/B test needs another version")
    return aliases.move_alias(reg, log, CANDIDATE, str(version), actor(), reason, FORCE,
                              expected_from=expected)  # fmt: skip


def conclude(settings: Settings, cfg: ABConfig | None = None) -> dict[str, Any]:
    """Act on the decision: a winning candidate becomes champion, a losing one stops; either way
    ``candidate`` is removed. Nothing happens while the test must continue."""
    from recsys.registry import aliases
    from recsys.registry.alias_log import PROMOTE, AliasLog, actor
    from recsys.registry.client import Registry

    state = status(settings, cfg)
    if not state["running"] or state["decision"] == CONTINUE:
        return {**state, "action": "none"}
    reg, log = Registry(settings), AliasLog(settings.event_store_url)
    why = f"A/B test: {state['decision']} ({state['reason']})"
    if state["decision"] == WIN:
        aliases.move_alias(reg, log, CHAMPION, state["candidate"], actor(), why, PROMOTE,
                           expected_from=state["champion"])  # fmt: skip
    aliases.end_alias(reg, log, CANDIDATE, actor(), why, state["candidate"])
    return {**state, "action": "promoted" if state["decision"] == WIN else "stopped"}
