import pandas as pd
import pytest

from recsys import schema as S
from recsys.config import DriftCheck, DriftPolicy
from recsys.data import drift


def _frame(users, items, types):
    return pd.DataFrame({S.USER_ID: users, S.ITEM_ID: items, S.EVENT_TYPE: types})


HISTORY = [{"rows": 10, "event_types": {"view": 8, "click": 2}}] * 3


def test_total_variation_limits():
    assert drift.total_variation({"a": 1.0}, {"a": 1.0}) == 0.0
    assert drift.total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert drift.total_variation({"a": 0.5, "b": 0.5}, {"a": 1.0}) == pytest.approx(0.5)


def test_too_little_history_skips_the_checks():
    frame = _frame(["u"], ["i"], ["view"])
    assert drift.check(frame, HISTORY[:2], set(), set(), DriftPolicy()) == []


def test_a_normal_partition_passes_every_check():
    frame = _frame(
        [f"u{i}" for i in range(10)], [f"i{i}" for i in range(10)], ["view"] * 8 + ["click"] * 2
    )
    findings = drift.check(
        frame, HISTORY, {f"u{i}" for i in range(10)}, {f"i{i}" for i in range(10)}, DriftPolicy()
    )
    assert {f.check for f in findings} == {
        "row_ratio",
        "new_user_share",
        "new_item_share",
        "event_type_shift",
    }
    assert not any(f.breached for f in findings)


def test_unknown_items_and_a_new_event_mix_quarantine():
    frame = _frame(["u1"] * 10, [f"new{i}" for i in range(10)], ["purchase"] * 10)
    findings = {f.check: f for f in drift.check(frame, HISTORY, {"u1"}, set(), DriftPolicy())}
    assert findings["new_item_share"].value == 1.0 and findings["new_item_share"].quarantines
    assert findings["event_type_shift"].value == 1.0 and findings["event_type_shift"].quarantines
    assert not findings["new_user_share"].breached


def test_a_volume_spike_only_warns_by_default():
    frame = _frame(["u1"] * 500, ["i1"] * 500, ["view"] * 400 + ["click"] * 100)
    (spike,) = [f for f in drift.check(frame, HISTORY, {"u1"}, {"i1"}, DriftPolicy()) if f.breached]
    assert spike.check == "row_ratio" and spike.value == 50.0
    assert not spike.quarantines and "BREACH (warn)" in spike.describe()


def test_actions_are_configurable():
    policy = DriftPolicy(row_ratio=DriftCheck(low=0.5, high=2.0, action="quarantine"))
    frame = _frame(["u1"] * 50, ["i1"] * 50, ["view"] * 40 + ["click"] * 10)
    findings = drift.check(frame, HISTORY, {"u1"}, {"i1"}, policy)
    assert [f.check for f in findings if f.quarantines] == ["row_ratio"]
