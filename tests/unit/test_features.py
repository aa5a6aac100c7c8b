import pandas as pd

from recsys import schema as S
from recsys.data.features import build_interactions, extend_item_index, to_sequences
from recsys.data.validate import EVENT_TS


def _events(rows):
    frame = pd.DataFrame(rows, columns=[S.EVENT_ID, S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, "t"])
    frame[EVENT_TS] = pd.to_datetime(frame.pop("t"), utc=True)
    frame[S.INGESTED_AT] = frame[EVENT_TS]
    return frame


EVENTS = _events(
    [
        ("e1", "u1", "b", "view", "2024-01-01T02:00"),
        ("e2", "u1", "a", "view", "2024-01-01T01:00"),
        ("e3", "u2", "c", "click", "2024-01-01T01:00"),
        ("e4", "u2", "a", "purchase", "2024-01-01T03:00"),
    ]
)


def test_item_index_is_ordered_by_first_appearance():
    assert extend_item_index([], EVENTS) == ["a", "c", "b"]  # a and c tie at 01:00: by id


def test_item_index_only_grows_and_never_moves_items():
    later = _events(
        [("e5", "u3", "z", "view", "2023-01-01"), ("e6", "u3", "a", "view", "2024-02-01")]
    )
    index = extend_item_index(["b", "a"], later)
    assert index == ["b", "a", "z"]


def test_sequences_are_time_ordered_per_user():
    index = extend_item_index([], EVENTS)
    users, seqs = to_sequences(build_interactions(EVENTS, index))
    assert users == ["u1", "u2"]
    pos = {item: i + 1 for i, item in enumerate(index)}
    assert seqs == [[pos["a"], pos["b"]], [pos["c"], pos["a"]]]


def test_non_interest_events_are_not_interactions():
    frame = pd.concat([EVENTS, _events([("e9", "u1", "a", "impression", "2024-01-01T05:00")])])
    interactions = build_interactions(frame, extend_item_index([], frame))
    assert "e9" not in set(interactions[S.EVENT_ID])
