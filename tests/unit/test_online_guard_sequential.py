"""The online guard's test holds its error rate over repeated looks: simulated hourly looks over
14 days on equal click-through rates roll back at most ``alpha`` of the time, and a real drop is
still caught within a day."""

import math

import numpy as np
import pytest

from recsys.release.online_guard import OnlineGuardConfig, ctr_dropped

CFG = OnlineGuardConfig()
HOURS = 14 * 24  # two weeks of hourly looks
PER_HOUR = 300  # lists the live version serves an hour
BASELINE = 7 * 24 * PER_HOUR  # the predecessor: a week as champion (baseline_hours)


def _stats(version: str, impressions: int, clicked: int) -> dict:
    return {"model_version": version, "impressions": impressions, "clicked": clicked}


def _rolled_back(rule, p_live: float, p_before: float, runs: int, seed: int) -> list[int | None]:
    """For each simulated run, the look at which ``rule`` rolled back (None: never)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(runs):
        before = _stats("1", BASELINE, int(rng.binomial(BASELINE, p_before)))
        clicks = rng.binomial(PER_HOUR, p_live, size=HOURS).cumsum()
        found = None
        for look in range(1, HOURS + 1):
            live = _stats("2", look * PER_HOUR, int(clicks[look - 1]))
            if rule(live, before, look):
                found = look
                break
        out.append(found)
    return out


def _guard(live, before, look):
    return ctr_dropped(live, before, CFG, look)[0]


def _fixed_z(live, before, look):
    """The guard's rule before alpha spending: a one-sided 5% z-test at every look."""
    n1, c1, n0, c0 = live["impressions"], live["clicked"], before["impressions"], before["clicked"]
    p1, p0, pooled = c1 / n1, c0 / n0, (c0 + c1) / (n0 + n1)
    z = (p0 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    return 1 - p1 / p0 > CFG.max_relative_drop and z > 1.645


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_equal_rates_are_rolled_back_at_most_alpha_over_two_weeks_of_looks(p):
    looks = _rolled_back(_guard, p, p, runs=400, seed=1)
    rate = sum(look is not None for look in looks) / len(looks)
    assert rate <= CFG.alpha, rate


def test_the_old_fixed_level_rule_fails_the_same_check():
    """The check can fail: testing at 5% every hour rolls back far more often than 5%."""
    looks = _rolled_back(_fixed_z, 0.05, 0.05, runs=400, seed=1)
    assert sum(look is not None for look in looks) / len(looks) > 2 * CFG.alpha


def test_a_real_drop_is_still_rolled_back_within_a_day():
    looks = _rolled_back(_guard, 0.035, 0.05, runs=200, seed=2)  # CTR down by 30%
    within_a_day = sum(look is not None and look <= 24 for look in looks) / len(looks)
    assert within_a_day >= 0.95, within_a_day


def test_the_spent_alpha_adds_up_to_alpha():
    spent = sum(CFG.alpha_at(k) for k in range(1, 100_000))
    assert spent < CFG.alpha and spent > 0.9999 * CFG.alpha
    assert CFG.alpha_at(1) > CFG.alpha_at(2) > CFG.alpha_at(24)
