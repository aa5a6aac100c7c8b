"""A/B tests' pure core: the arm of a user, and the sequential readout's error rates."""

import numpy as np
import pytest

from recsys.release.ab import CONTINUE, LOSE, WIN, ABConfig, Arm, arm_of, readout

CFG = ABConfig(look_impressions=50)


def test_a_user_keeps_an_arm_the_share_holds_and_a_new_test_reshuffles():
    users = [f"u{n}" for n in range(20_000)]
    arms = [arm_of(u, 0.2, "7") for u in users]
    assert arms == [arm_of(u, 0.2, "7") for u in users]  # the same user, the same arm
    assert abs(arms.count("candidate") / len(users) - 0.2) < 0.01
    other = [arm_of(u, 0.2, "8") for u in users]  # another candidate: another draw
    moved = sum(a != b for a, b in zip(arms, other, strict=True)) / len(users)
    assert 0.25 < moved < 0.39  # independent draws differ 2 * 0.2 * 0.8 = 32% of the time
    assert arm_of(None, 0.2, "7") is None  # anonymous: not in the test


def test_no_decision_before_the_first_look_and_the_look_uses_its_own_data():
    early = readout({"champion": [True] * 49, "candidate": [False] * 80}, CFG)
    assert early.decision == CONTINUE and early.look == 0 and "fewest: 49" in early.reason
    # 100 impressions per arm: look 2 on the first 100 of each, whatever came after.
    tail = [True] * 40
    got = readout({"champion": [False] * 100 + tail, "candidate": [True] * 60 + [False] * 40}, CFG)
    assert got.look == 2 and got.arms["champion"].impressions == 140
    assert got.diff == pytest.approx(0.6) and got.decision == WIN
    assert got.low < 0.6 < got.high and got.alpha_spent == pytest.approx(CFG.alpha_at(2))
    swapped = readout({"champion": [True] * 60 + [False] * 40, "candidate": [False] * 100}, CFG)
    assert swapped.decision == LOSE


def test_wilson_interval_covers_the_rate():
    low, high = Arm("a", 200, 20).interval()
    assert low < 0.1 < high and 0.06 < low and high < 0.16
    assert Arm("a", 0, 0).interval() == (0.0, 1.0)


def _run(rng, p_champion, p_candidate, looks):
    """One simulated test, read at each look until it stops: its decision."""
    n = looks * CFG.look_impressions
    outcomes = {
        "champion": list(rng.random(n) < p_champion),
        "candidate": list(rng.random(n) < p_candidate),
    }
    for look in range(1, looks + 1):
        m = look * CFG.look_impressions
        got = readout({arm: o[:m] for arm, o in outcomes.items()}, CFG)
        if got.decision != CONTINUE:
            return got.decision
    return CONTINUE


def test_an_equal_candidate_is_rarely_declared_different_however_often_one_looks():
    rng = np.random.default_rng(0)
    runs = 400
    decided = sum(_run(rng, 0.10, 0.10, looks=28) != CONTINUE for _ in range(runs))
    assert decided / runs <= CFG.alpha  # nominal level over all 28 looks together


def test_a_clearly_better_candidate_wins():
    rng = np.random.default_rng(1)
    runs = 100
    wins = sum(_run(rng, 0.10, 0.20, looks=28) == WIN for _ in range(runs))
    assert wins / runs >= 0.9


def test_config_loads_the_shipped_defaults_and_refuses_bad_ones(tmp_path):
    assert ABConfig.load() == ABConfig()
    bad = tmp_path / "p.toml"
    bad.write_text("[ab]\nsplit = 0.5\n")
    with pytest.raises(ValueError, match="split"):
        ABConfig.load(bad)
    with pytest.raises(ValueError, match="share"):
        ABConfig(share=1.0)
