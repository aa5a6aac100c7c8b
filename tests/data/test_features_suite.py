"""The features suite on an audit frame built from a small snapshot, good and crafted-bad."""

import pandas as pd
import pytest

from recsys import schema as S
from recsys.data.features import (
    InvalidFeaturesError,
    audit_frame,
    build_interactions,
    check_snapshot,
    extend_item_index,
)
from recsys.data.suites import load_suite, validate_frame
from recsys.data.validate import EVENT_TS


def _interactions():
    rows = [
        (f"e{u}{k}", f"u{u}", f"i{(u + k) % 6}", f"2024-01-01T0{k}:00")
        for u in range(4)
        for k in range(u + 1)
    ]  # users with 1, 2, 3 and 4 events
    frame = pd.DataFrame(rows, columns=[S.EVENT_ID, S.USER_ID, S.ITEM_ID, "t"])
    frame[EVENT_TS] = pd.to_datetime(frame.pop("t"), utc=True)
    frame[S.EVENT_TYPE] = "view"
    frame[S.INGESTED_AT] = frame[EVENT_TS]
    return build_interactions(frame, extend_item_index([], frame))


def test_roles_follow_the_leave_last_out_split():
    audit = audit_frame(_interactions(), min_events=3)
    roles = audit.groupby(S.USER_ID)["role"].agg(list).to_dict()
    assert roles["u0"] == ["unused"]  # one event: nothing to learn from
    assert roles["u1"] == ["train", "train"]  # too short to evaluate: all training
    assert roles["u2"] == ["train", "valid", "test"]
    assert roles["u3"] == ["train", "train", "valid", "test"]
    assert (audit["uses"] <= 1).all()


def test_a_good_snapshot_passes():
    interactions = _interactions()
    result = check_snapshot(interactions, int(interactions[S.ITEM_IDX].max()))
    assert result["success"] and result["statistics"]["evaluated_expectations"] == 8


def _failures(audit, n_items=6):
    report = validate_frame(audit, load_suite("features"), {"n_items": n_items})
    assert not report.success
    return {(f["expectation"], f["column"]) for f in report.failures}


def test_items_outside_the_index_fail_coverage():
    audit = audit_frame(_interactions(), 3)
    audit.loc[0, S.ITEM_IDX] = 7
    assert ("expect_column_values_to_be_between", S.ITEM_IDX) in _failures(audit)


def test_a_row_both_trained_on_and_held_out_is_leakage():
    audit = audit_frame(_interactions(), 3)
    audit.loc[audit["role"] == "test", "uses"] = 2
    assert ("expect_column_values_to_be_between", "uses") in _failures(audit)


def test_a_target_before_training_events_is_leakage():
    audit = audit_frame(_interactions(), 3)
    target = audit.index[(audit[S.USER_ID] == "u3") & (audit["role"] == "test")][0]
    audit.loc[target, "position"] = 0
    assert ("expect_column_pair_values_a_to_be_greater_than_b", None) in _failures(audit)


@pytest.mark.parametrize(
    "column,value,expectation",
    [
        (S.USER_ID, None, "expect_column_values_to_not_be_null"),
        (EVENT_TS, pd.NaT, "expect_column_values_to_not_be_null"),
        ("role", "peeked", "expect_column_values_to_be_in_set"),
        ("seq_len", 0, "expect_column_values_to_be_between"),
    ],
)
def test_each_column_expectation_fails_on_crafted_bad_rows(column, value, expectation):
    audit = audit_frame(_interactions(), 3)
    audit[column] = audit[column].astype(object)
    audit.loc[1, column] = value
    assert (expectation, column) in _failures(audit)


def test_duplicate_event_ids_fail():
    audit = audit_frame(_interactions(), 3)
    audit.loc[1, S.EVENT_ID] = audit.loc[0, S.EVENT_ID]
    assert ("expect_column_values_to_be_unique", S.EVENT_ID) in _failures(audit)


def test_check_snapshot_raises_on_a_bad_snapshot():
    interactions = _interactions()
    with pytest.raises(InvalidFeaturesError, match="item_idx"):
        check_snapshot(interactions, n_items=2)  # the index is shorter than the items used
