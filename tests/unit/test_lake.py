import datetime as dt

import pytest

from recsys.lake import Interval


def test_interval_id_round_trips_and_sorts_by_time():
    a = Interval.parse("2024-01-01", "2024-01-02")
    b = Interval.parse("2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00Z")
    assert Interval.from_id(a.id) == a
    assert a.id == "20240101T000000Z--20240102T000000Z"
    assert sorted([b.id, a.id]) == [a.id, b.id]


def test_interval_converts_aware_times_to_utc():
    iv = Interval.parse("2024-01-01T02:00:00+02:00", "2024-01-02T00:00:00+00:00")
    assert iv.start == dt.datetime(2024, 1, 1, 0, 0)


@pytest.mark.parametrize("start,end", [("2024-01-02", "2024-01-01"), ("2024-01-01", "2024-01-01")])
def test_interval_rejects_empty_or_reversed(start, end):
    with pytest.raises(ValueError, match="must be after"):
        Interval.parse(start, end)


def test_interval_rejects_garbage():
    with pytest.raises(ValueError, match="not an ISO-8601"):
        Interval.parse("yesterday", "2024-01-01")
